"""grex: shared email threads as a searchable knowledge base."""

from grex.errors import GrexError
from grex.models import Address, Attachment, Body, Location, Message, RawMessage, Thread

__version__ = "0.1.0"

__all__ = [
    "Address", "Attachment", "Body", "GrexError", "Location", "Message", "RawMessage", "Thread",
    "__version__",
]
