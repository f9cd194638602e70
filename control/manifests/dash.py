"""The DASH MPD of one session: the title's packaged MPD with one BaseURL per pathway and a ContentSteering element.

`DashTemplate.build(mpd_text, base_path=...)` parses and rewrites the packaged MPD once per title and keeps the
serialised text split at the insertion point; `render(pathways, steering_uri)` is then string joins.

Rules kept here:
- One `<BaseURL serviceLocation="<pathway>">` per pathway at MPD level, in priority order, each absolute
  (`<pathway base>/<directory of the MPD>/`, so the packaged relative segment URLs resolve under the token);
  the packaged MPD-level BaseURLs are removed (ETSI TS 103 998: serviceLocation names the pathway). Relative
  BaseURLs and SegmentTemplates below MPD level are kept; an absolute or root-relative BaseURL below MPD
  level would bypass steering and the token, so the template refuses it (ValueError).
- `<ContentSteering defaultServiceLocation="<pathways, space separated>" queryBeforeStart="...">URI
  </ContentSteering>`, at most one, at MPD level (ETSI TS 103 998; dash.js splits defaultServiceLocation on
  spaces and starts on the first listed location it has a BaseURL for).
- The packaged MPD-level Location and PatchLocation elements are removed too: they point at where the packager
  wrote the file, and a player refreshing the MPD from there would leave steering and the token behind.
- Element order: BaseURLs go where ISO/IEC 23009-1 (5th ed. schema, MPDtype sequence) puts them, right after
  ProgramInformation. The 5th edition schema has no ContentSteering element; it follows the MPD-level
  BaseURLs, before ServiceDescription and Period, where the DASH-IF and player examples (dash.js, video.js
  mpd-parser) put it. dash.js finds it by name, so the order only matters to validators.
- The output stays in the DASH namespace `urn:mpeg:dash:schema:mpd:2011` as the default namespace, with the
  document's other prefixes (cenc, xlink, ...) kept: some players match `cenc:default_KID` by prefix.
  ElementTree's default_namespace option fails on unqualified attributes, so the prefixes are registered
  with `ET.register_namespace` (process-wide, idempotent for the same prefix and URI).
- A DOCTYPE is refused (no entity expansion from a packaged file); so is a root that is not a DASH MPD.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from control.manifests.common import PathwayBase, check_pathways
from control.model import Title

DASH_NS = "urn:mpeg:dash:schema:mpd:2011"
_BASE_URL = f"{{{DASH_NS}}}BaseURL"
_REPLACED = {_BASE_URL, f"{{{DASH_NS}}}ContentSteering", f"{{{DASH_NS}}}Location", f"{{{DASH_NS}}}PatchLocation"}
_PROGRAM_INFORMATION = f"{{{DASH_NS}}}ProgramInformation"
_MARK = "OcaSteeringMark"
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:|/")  # a scheme, or root-relative / network-path
_INDENT = "  "


@dataclass(frozen=True, slots=True)
class DashTemplate:
    head: str  # up to the BaseURL insertion point
    tail: str  # after the ContentSteering element
    base_path: str  # the MPD's directory as a content path, with a trailing slash: titles/<id>/

    @classmethod
    def for_title(cls, title: Title, mpd_text: str) -> DashTemplate:
        """The template for `title`, segment URLs resolving under the directory of `title.dash_manifest`."""
        directory = title.dash_manifest.rpartition("/")[0] if title.dash_manifest else f"titles/{title.id}"
        return cls.build(mpd_text, base_path=f"{directory}/")

    @classmethod
    def build(cls, mpd_text: str, *, base_path: str) -> DashTemplate:
        """ValueError when the text is not a usable DASH MPD (naming what is wrong)."""
        if "<!DOCTYPE" in mpd_text or "<!ENTITY" in mpd_text:
            raise ValueError("MPD: a DOCTYPE or entity declaration is not accepted")
        try:
            root = ET.fromstring(mpd_text)
            prefixes = dict(ns for _, ns in ET.iterparse(io.StringIO(mpd_text), events=("start-ns",)))
        except ET.ParseError as exc:
            raise ValueError(f"MPD: not well-formed XML ({exc})") from None
        if root.tag != f"{{{DASH_NS}}}MPD":
            raise ValueError(f"MPD: root element is {root.tag!r}, expected MPD in namespace {DASH_NS}")
        for child in list(root):
            if child.tag in _REPLACED:
                root.remove(child)
        _check_nested_base_urls(root)
        children = list(root)
        at = next((i for i, c in enumerate(children) if c.tag != _PROGRAM_INFORMATION), len(children))
        root.insert(at, ET.Element(f"{{{DASH_NS}}}{_MARK}"))
        _register(prefixes)
        ET.indent(root, space=_INDENT)
        text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
        head, mark, tail = text.partition(f"<{_MARK} />")
        if not mark:
            raise ValueError("MPD: could not place the steering elements (unexpected serialisation)")
        return cls(head, tail, base_path.lstrip("/"))

    def render(self, pathways: Sequence[PathwayBase], steering_uri: str, *, query_before_start: bool = True) -> str:
        """The MPD text; ValueError on an empty or invalid pathway list or an empty steering URI."""
        check_pathways(pathways)
        if not steering_uri:
            raise ValueError("steering URI: empty")
        path = escape(self.base_path)
        lines = [f'<BaseURL serviceLocation="{p.id}">{escape(p.base_url)}/{path}</BaseURL>' for p in pathways]
        lines.append(f'<ContentSteering defaultServiceLocation="{" ".join(p.id for p in pathways)}" '
                     f'queryBeforeStart="{"true" if query_before_start else "false"}">{escape(steering_uri)}'
                     "</ContentSteering>")
        return self.head + f"\n{_INDENT}".join(lines) + self.tail


def _check_nested_base_urls(root: ET.Element) -> None:
    """After the MPD-level BaseURLs are gone: any BaseURL left is below MPD level."""
    for element in root.iter(_BASE_URL):
        text = (element.text or "").strip()
        if _ABSOLUTE.match(text):
            raise ValueError(f"MPD: BaseURL {text!r} below MPD level is absolute and would bypass steering "
                             "and the token")


def _register(prefixes: dict[str, str]) -> None:
    ET.register_namespace("", DASH_NS)
    for prefix, uri in prefixes.items():
        if prefix and uri != DASH_NS and not re.fullmatch(r"ns\d+", prefix):
            ET.register_namespace(prefix, uri)

