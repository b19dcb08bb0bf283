"""grex: shared email threads as a searchable knowledge base."""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs a served search ~8 ms (re, enum)
if TYPE_CHECKING:
    from grex.errors import GrexError
    from grex.models import Address, Attachment, Body, Location, Message, RawMessage, Thread

__version__ = "0.1.0"

__all__ = [
    "Address", "Attachment", "Body", "GrexError", "Location", "Message", "RawMessage", "Thread",
    "__version__",
]

_LAZY = {"GrexError": "grex.errors", "Address": "grex.models", "Attachment": "grex.models",
         "Body": "grex.models", "Location": "grex.models", "Message": "grex.models",
         "RawMessage": "grex.models", "Thread": "grex.models"}


def __getattr__(name: str) -> object:
    # imported on first use: `grex search` through the search server imports nothing of
    # grex but its client (grex.search.client), and dataclasses alone cost ~20 ms
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'grex' has no attribute {name!r}")
    # the import statement's machinery (not importlib's), so -X importtime reports it
    value = getattr(__import__(module, fromlist=(name,)), name)
    globals()[name] = value
    return value
