"""The catalog: packaged titles (renditions, every file with its size and xxh3_128 digest, licence countries).

`ingest` reads a package (HLS multivariant + media playlists, DASH MPD) from a directory or an origin URL;
`codec` turns titles into the JSON the store keeps and the API serves; `hls` and `dash` are pure parsers.
"""

from control.catalog.codec import check_countries, check_title_id, title_from_json, title_to_json
from control.catalog.ingest import Ingested, ingest, ingest_source

__all__ = ["Ingested", "check_countries", "check_title_id", "ingest", "ingest_source", "title_from_json",
           "title_to_json"]
