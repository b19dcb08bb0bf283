"""Static HTML knowledge pages: ``grex export html``.

    catalog + extraction ──read_threads──> ThreadInput ──build_site──> Site
        ──render_site──> (path, bytes) ──publish──> versioned dir + atomic symlink swap

The site works from file:// and any static host, searches with no server
(assets/search/*.js, loaded on demand by assets/search.js), loads nothing remote and runs
no script but its own search (a Content-Security-Policy meta tag on every page).
"""

from grex.export.build import BuildOptions, build_site
from grex.export.model import Knowledge, Site, ThreadInput
from grex.export.publish import PublishReport
from grex.export.render import render_site
from grex.export.run import ExportOptions, ExportReport, export_html, run_export

__all__ = [
    "BuildOptions", "ExportOptions", "ExportReport", "Knowledge", "PublishReport", "Site",
    "ThreadInput", "build_site", "export_html", "render_site", "run_export",
]
