"""Sample content for tests and the lab: `oca content make OUTDIR --titles N`.

Real H.264/AAC from ffmpeg's test sources, one encode per rendition packaged as HLS fMP4, HLS TS and DASH
(`ladder` holds the ladder and the command lines as data, `manifests` writes the playlists and the MPD from
measured values, `make` runs the tools, `synthetic` is the fallback when ffmpeg is absent). The layout,
which `oca catalog ingest OUTDIR/titles/<id> <id>` reads:

    OUTDIR/catalog.json                 the titles: id, path, duration, renditions, synthetic, countries
    OUTDIR/titles/<id>/master.m3u8      HLS multivariant (fMP4): 3 video variants + an AUDIO rendition
    OUTDIR/titles/<id>/manifest.mpd     DASH (static, SegmentTemplate + SegmentTimeline) over the same files
    OUTDIR/titles/<id>/countries.txt    only for a title restricted to some countries
    OUTDIR/titles/<id>/{360p,720p,1080p,audio}/index.m3u8, init.mp4, seg_00001.m4s ...
    OUTDIR/titles/<id>/ts/master.m3u8   HLS with MPEG-TS segments (audio muxed in), not named by master.m3u8
    OUTDIR/titles/<id>/ts/{360p,720p,1080p}/index.m3u8, seg_00001.ts ...
    OUTDIR/titles/<id>/.made.json       the marker: written last, what the title was made from
"""

from oca.content.make import EncodeError, MadeContent, MadeTitle, Runner, make_content

__all__ = ["EncodeError", "MadeContent", "MadeTitle", "Runner", "make_content"]
