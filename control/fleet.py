"""The fleet section of the control plane's config (sites, boxes, origin) and the coverage file, as model.Fleet.

Rules kept here:
- Every problem is one ConfigError naming the file, the key path and the value (`fleet.boxes[1].site:
  unknown site 'ams-9'`).
- Ids are pathway ids in manifests, so they use the HLS PATHWAY-ID alphabet: letters, digits, `.`, `_`, `-`;
  `origin` is reserved for the origin pathway.
- A site's parent chain must end (no cycles); countries are ISO 3166-1 alpha-2, upper-cased here.
- Prefixes are CIDR networks without host bits; coverage rows are `prefix, lat, lon, country`
  (CSV with an optional header line, or a YAML list of mappings with those keys).
- Announced prefixes are listed per box (`prefixes:`) or, for a large fleet, in one CSV file named by
  `fleet.prefixes_file` (relative to the file naming it), which control.prefix_data reads (at start and on
  every change) together with the coverage file; a box gets both.
- Rates are bits per second: an integer or `10Gbps`, `400Mbps`, `1.5Gbit`.
"""

from __future__ import annotations

import csv
import ipaddress
import os
import re
from collections.abc import Iterator
from typing import Any

import yaml

from control.model import ORIGIN_PATHWAY, Box, CoverageArea, Fleet, Site
from control.prefixes import fast_cidr
from oca.config.settings import SAFE_LOADER, join, kind, read_yaml, resolve_path
from oca.config.units import parse_rate
from oca.errors import ConfigError

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COUNTRY_RE = re.compile(r"[A-Za-z]{2}")
_SITE_KEYS = {"id", "latitude", "longitude", "lat", "lon", "country", "parent"}
_BOX_KEYS = {"id", "site", "data_url", "admin_url", "egress_capacity", "prefixes"}
_FLEET_KEYS = {"origin_url", "sites", "boxes", "prefixes_file"}


def load_fleet(raw: object, file: str, coverage_file: str | None) -> tuple[Fleet, str | None]:
    """The fleet from the `fleet:` value of `file` (inline, or {file: PATH}) plus the coverage file, and the
    path of its announced-prefix file (`prefixes_file`, resolved; read by control.prefix_data)."""
    key = "fleet"
    if isinstance(raw, dict) and set(raw) == {"file"}:
        if not isinstance(raw["file"], str) or not raw["file"]:
            raise ConfigError(file, "fleet.file", f"expected a path, got {kind(raw['file'])}")
        file = resolve_path(raw["file"], os.path.dirname(os.path.abspath(file)))
        raw, key = read_yaml(file), ""
    if not isinstance(raw, dict):
        raise ConfigError(file, key, f"expected a mapping, got {kind(raw)}")
    for name in raw:
        if name not in _FLEET_KEYS:
            raise ConfigError(file, join(key, str(name)), f"unknown key (known: {', '.join(sorted(_FLEET_KEYS))})")
    origin = _url(raw.get("origin_url"), file, join(key, "origin_url"))
    sites = _sites(raw.get("sites"), file, join(key, "sites"))
    boxes = _boxes(raw.get("boxes"), sites, file, join(key, "boxes"))
    prefixes_file = raw.get("prefixes_file")
    if prefixes_file is not None:
        if not isinstance(prefixes_file, str) or not prefixes_file:
            raise ConfigError(file, join(key, "prefixes_file"), f"expected a path, got {kind(prefixes_file)}")
        prefixes_file = resolve_path(prefixes_file, os.path.dirname(os.path.abspath(file)))
    coverage = load_coverage(coverage_file) if coverage_file else ()
    return Fleet(sites=sites, boxes=boxes, coverage=coverage, origin_url=origin), prefixes_file


def _list(raw: object, file: str, key: str) -> list[Any]:
    if raw is None:
        raise ConfigError(file, key, "is required")
    if not isinstance(raw, list):
        raise ConfigError(file, key, f"expected a list, got {kind(raw)}")
    return raw


def _entry(raw: object, known: set[str], file: str, key: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(file, key, f"expected a mapping, got {kind(raw)}")
    for name in raw:
        if name not in known:
            raise ConfigError(file, join(key, str(name)), f"unknown key (known: {', '.join(sorted(known))})")
    return raw


def _id(raw: object, file: str, key: str) -> str:
    if not isinstance(raw, str) or not ID_RE.fullmatch(raw):
        raise ConfigError(file, key, f"expected an id of letters, digits, '.', '_' or '-', got {kind(raw)}")
    if raw == ORIGIN_PATHWAY:
        raise ConfigError(file, key, f"{raw!r} is reserved for the origin pathway")
    return raw


def _number(raw: object, file: str, key: str, low: float, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise ConfigError(file, key, f"expected a number from {low:g} to {high:g}, got {kind(raw)}")
    return float(raw)


def _country(raw: object, file: str, key: str) -> str:
    if not isinstance(raw, str) or not _COUNTRY_RE.fullmatch(raw):
        raise ConfigError(file, key, f"expected a two-letter country code such as US, got {kind(raw)}")
    return raw.upper()


def _url(raw: object, file: str, key: str) -> str:
    if not isinstance(raw, str) or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", raw):
        raise ConfigError(file, key, f"expected an http(s) URL such as http://10.0.0.1:8080, got {kind(raw)}")
    return raw.rstrip("/")


def _sites(raw: object, file: str, key: str) -> dict[str, Site]:
    sites: dict[str, Site] = {}
    for i, item in enumerate(_list(raw, file, key)):
        where = f"{key}[{i}]"
        entry = _entry(item, _SITE_KEYS, file, where)
        site_id = _id(entry.get("id"), file, f"{where}.id")
        if site_id in sites:
            raise ConfigError(file, f"{where}.id", f"duplicate site id {site_id!r}")
        lat = _number(entry.get("latitude", entry.get("lat")), file, f"{where}.latitude", -90, 90)
        lon = _number(entry.get("longitude", entry.get("lon")), file, f"{where}.longitude", -180, 180)
        country = _country(entry.get("country"), file, f"{where}.country")
        parent = entry.get("parent")
        if parent is not None:
            parent = _id(parent, file, f"{where}.parent")
        sites[site_id] = Site(site_id, lat, lon, country, parent)
    for i, site in enumerate(sites.values()):
        seen = {site.id}
        parent = site.parent
        while parent is not None:
            if parent not in sites:
                raise ConfigError(file, f"{key}[{i}].parent", f"unknown site {parent!r}")
            if parent in seen:
                raise ConfigError(file, f"{key}[{i}].parent", f"parent chain of {site.id!r} loops at {parent!r}")
            seen.add(parent)
            parent = sites[parent].parent
    return sites


def _boxes(raw: object, sites: dict[str, Site], file: str, key: str) -> dict[str, Box]:
    boxes: dict[str, Box] = {}
    for i, item in enumerate(_list(raw, file, key)):
        where = f"{key}[{i}]"
        entry = _entry(item, _BOX_KEYS, file, where)
        box_id = _id(entry.get("id"), file, f"{where}.id")
        if box_id in boxes:
            raise ConfigError(file, f"{where}.id", f"duplicate box id {box_id!r}")
        site = entry.get("site")
        if site not in sites:
            raise ConfigError(file, f"{where}.site", f"unknown site {site!r} (known: {', '.join(sorted(sites))})")
        try:
            capacity = parse_rate(entry.get("egress_capacity", "10Gbps"))
        except ValueError as exc:
            raise ConfigError(file, f"{where}.egress_capacity", str(exc)) from None
        if capacity <= 0:
            raise ConfigError(file, f"{where}.egress_capacity", "must be positive")
        prefixes = entry.get("prefixes", [])
        if not isinstance(prefixes, list):
            raise ConfigError(file, f"{where}.prefixes", f"expected a list of CIDR prefixes, got {kind(prefixes)}")
        nets = tuple(canonical_prefix(p, file, f"{where}.prefixes[{j}]") for j, p in enumerate(prefixes))
        boxes[box_id] = Box(box_id, str(site), _url(entry.get("data_url"), file, f"{where}.data_url"),
                            _url(entry.get("admin_url"), file, f"{where}.admin_url"), capacity, nets)
    return boxes


def canonical_prefix(raw: object, file: str, key: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(file, key, f"expected a CIDR prefix such as 192.0.2.0/24, got {kind(raw)}")
    found = fast_cidr(raw)
    if found is not None:
        return found[3]
    try:
        return str(ipaddress.ip_network(raw.strip(), strict=True))
    except ValueError as exc:
        raise ConfigError(file, key, f"not a CIDR prefix: {exc}") from None


def load_coverage(path: str) -> tuple[CoverageArea, ...]:
    """Coverage rows from a CSV or YAML file (chosen by extension: .yaml/.yml is YAML, anything else CSV)."""
    rows: list[tuple[str, Any]] = []
    if path.endswith((".yaml", ".yml")):
        raw = _read_yaml_list(path)
        for i, item in enumerate(raw):
            entry = _entry(item, {"prefix", "lat", "lon", "latitude", "longitude", "country"}, path, f"[{i}]")
            rows.append((f"[{i}]", (entry.get("prefix"), entry.get("lat", entry.get("latitude")),
                                    entry.get("lon", entry.get("longitude")), entry.get("country"))))
    else:
        rows = _read_csv(path)
    areas = []
    for where, (prefix, lat, lon, country) in rows:
        areas.append(CoverageArea(canonical_prefix(prefix, path, f"{where}.prefix"),
                                  _number(lat, path, f"{where}.lat", -90, 90),
                                  _number(lon, path, f"{where}.lon", -180, 180),
                                  _country(country, path, f"{where}.country")))
    return tuple(areas)


def _read_yaml_list(path: str) -> list[Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.load(fh, Loader=SAFE_LOADER)
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, "", f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, list):
        raise ConfigError(path, "", f"expected a list of coverage rows, got {kind(raw)}")
    return raw


def _read_csv(path: str) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for where, cells in csv_rows(path, "prefix"):
        if len(cells) != 4:
            raise ConfigError(path, where, f"expected 4 columns (prefix,lat,lon,country), got {len(cells)}")
        try:
            lat, lon = float(cells[1]), float(cells[2])
        except ValueError:
            raise ConfigError(path, where, f"lat and lon must be numbers, got {cells[1]!r}, {cells[2]!r}") from None
        rows.append((where, (cells[0], lat, lon, cells[3])))
    return rows


def csv_rows(path: str, header: str, *, report_header: bool = False) -> Iterator[tuple[str, list[str]]]:
    """("line N", stripped cells) of each row of a CSV file, skipping blank and `#` lines and a first line
    whose first cell is `header` (yielded as ("header", cells) when `report_header`); ConfigError when the
    file cannot be read or is not UTF-8."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            for line in reader:
                n = reader.line_num
                cells = [c.strip() for c in line]
                if not cells or not any(cells) or cells[0].startswith("#"):
                    continue
                if n == 1 and cells[0].lower() == header:
                    if report_header:
                        yield "header", cells
                    continue
                yield f"line {n}", cells
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, _undecodable_line(path), f"not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise ConfigError(path, "", f"not valid CSV: {exc}") from None


def _undecodable_line(path: str) -> str:
    """"line N" of the first line of the file that is not UTF-8 ("" if it cannot be read again)."""
    try:
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {n}"
    except OSError:
        pass
    return ""
