"""Write the neuron browser: every page, the site's own assets and the vendored plotly.js, into a temporary
folder beside ``--out``, renamed onto it at the end, so no half-written site is ever left.

plotly.js is not kept in this repository: it is copied from the installed ``plotly`` Python package
(``plotly/package_data/plotly.min.js``), so the site needs no network to draw its figures.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from popsteer.browse.content import SiteData
from popsteer.browse.pages_neurons import index_page, neuron_page
from popsteer.browse.pages_steer import tradeoff_page, user_href, user_page, users_page
from popsteer.errors import PopSteerError
from popsteer.util.atomic import disk_full_error, made_folder

log = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
MARKER = "popsteer_browser.json"
"""Written last into the site: marks a folder that a later ``browse`` may replace."""


def plotly_js() -> Path:
    """plotly.min.js of the installed plotly package (a PopSteerError when it is missing)."""
    try:
        import plotly
    except ImportError:
        raise PopSteerError("the neuron browser needs the plotly Python package (its plotly.min.js): "
                            "pip install plotly") from None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise PopSteerError(f"the installed plotly package has no {path}")
    return path


def check_out(out: Path) -> None:
    """``out`` must be absent or an earlier neuron browser (one with ``MARKER``)."""
    if out.exists() and not (out.is_dir() and (out / MARKER).is_file()):
        raise PopSteerError(f"{out} exists and is not a neuron browser written by popsteer browse: choose another --out")


def site_pages(data: SiteData) -> dict[str, str]:
    """Relative path -> HTML of every page."""
    pages = {"index.html": index_page(data), "tradeoff.html": tradeoff_page(data), "users.html": users_page(data)}
    pages |= {f"neurons/{j}.html": neuron_page(data, int(j)) for j in data.pages}
    pages |= {user_href(c.user): user_page(data, c) for c in data.cases}
    return pages


def write_site(out: str | Path, data: SiteData, record: dict) -> Path:
    """Build the site in ``.<out>.*.tmp`` beside ``out`` and rename it onto ``out`` (an earlier site is replaced)."""
    out = Path(out).absolute()
    check_out(out)
    plotly = plotly_js()
    pages = site_pages(data)
    with made_folder(out.parent):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            _fill(tmp, pages, plotly, record)
            _replace(tmp, out)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            full = disk_full_error(out, exc)
            if full is not None:
                raise full from exc
            raise
    log.info("neuron browser: %d pages in %s (open %s)", len(pages), out, out / "index.html")
    return out


def _fill(folder: Path, pages: dict[str, str], plotly: Path, record: dict) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)  # mkdtemp makes 0700; the site gets the usual permissions
    for rel, text in pages.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assets = folder / "assets"
    shutil.copytree(ASSETS, assets, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(plotly, assets / "plotly.min.js")
    (folder / MARKER).write_text(json.dumps({**record, "pages": len(pages)}, indent=2, default=str))


def _replace(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an earlier site is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / "site")
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old / "site", out)  # put the earlier site back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
