"""HTML pieces shared by the participant and group reports: one page shell and its style, embedded images, tables.

Reports must open from anywhere (copied off a cluster, attached to an e-mail), so images are embedded as base64
data URIs and the style is inline; nothing refers to another file. The page and the blocks are jinja2 templates
(``templates/``), autoescaped.
"""

from __future__ import annotations

import base64
import functools
import math
from collections.abc import Iterable
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from bids_jdam import __version__


@functools.cache
def _environment() -> Environment:
    """The reports' templates (``reports/templates``), autoescaped: text from inputs never becomes markup."""
    environment = Environment(
        loader=PackageLoader("bids_jdam", "reports/templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["value"] = format_value
    return environment


def _block(name: str, *args: object) -> str:
    """One macro of ``blocks.html.j2``, rendered."""
    macro = getattr(_environment().get_template("blocks.html.j2").module, name)
    return str(macro(*args))


def render(template: str, **context: object) -> str:
    """A report template of ``templates/`` rendered with ``context``."""
    return _environment().get_template(template).render(**context)


def page(title: str, body: str) -> str:
    """A complete HTML document around ``body`` (already HTML)."""
    return _environment().get_template("page.html.j2").render(title=title, body=Markup(body), version=__version__)


def embedded_image(png_path: Path, alt: str, caption: str = "") -> str:
    """A <figure> with the PNG inlined as a data URI and an optional caption."""
    return embedded_png(Path(png_path).read_bytes(), alt, caption)


def embedded_png(png_bytes: bytes, alt: str, caption: str = "") -> str:
    """Like :func:`embedded_image` for a PNG rendered in memory."""
    encoded = base64.b64encode(png_bytes).decode("ascii")
    return _block("figure", f"data:image/png;base64,{encoded}", alt, caption)


def key_value_table(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table of labels and values."""
    return _block("key_value_table", list(rows))


def data_table(header: list[str], rows: Iterable[list[object]], flagged: Iterable[bool] | None = None) -> str:
    """A table with a header row; rows whose ``flagged`` entry is true are highlighted."""
    return _block("data_table", header, [list(row) for row in rows], list(flagged) if flagged is not None else None)


def details(summary: str, inner_html: str) -> str:
    """A collapsed block: ``summary`` shown, ``inner_html`` (already HTML) on a click."""
    return _block("details", summary, Markup(inner_html))


def bullet_list(items: Iterable[str], css_class: str = "") -> str:
    """An unordered list of plain-text items."""
    return _block("bullet_list", list(items), css_class)


def format_value(value: object) -> str:
    """Numbers to 3 significant digits (whole numbers from 100 up), missing values as n/a (the BIDS spelling)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
