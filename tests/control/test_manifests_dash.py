"""The DASH MPD rewrite, read back with an XML parser in the DASH namespace."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from control.manifests import DASH_NS, DashTemplate, PathwayBase
from control.model import Title

NS = {"mpd": DASH_NS}
PACKAGED = """<?xml version="1.0" encoding="utf-8"?>
<!-- written by the packager -->
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" xmlns:cenc="urn:mpeg:cenc:2013"
     xmlns:xlink="http://www.w3.org/1999/xlink" profiles="urn:mpeg:dash:profile:isoff-live:2011"
     type="static" mediaPresentationDuration="PT10S" minBufferTime="PT2S">
  <ProgramInformation><Title>Big &amp; Bunny</Title></ProgramInformation>
  <BaseURL>http://packager.example/out/</BaseURL>
  <Location>http://packager.example/out/manifest.mpd</Location>
  <ContentSteering defaultServiceLocation="old">http://old.example/steer</ContentSteering>
  <Period id="0">
    <AdaptationSet id="0" contentType="video">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc"
                         cenc:default_KID="10000000-1000-1000-1000-100000000001"/>
      <SegmentTemplate timescale="12800" initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/seg_$Number%05d$.m4s" startNumber="1" duration="51200"/>
      <Representation id="720p" bandwidth="3000000" width="1280" height="720" codecs="avc1.64001f"/>
      <Representation id="1080p" bandwidth="6000000" width="1920" height="1080" codecs="avc1.640028">
        <BaseURL>hd/</BaseURL>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""
BASES = [PathwayBase("lon-2", "http://lon-2.test:8080/t/TOKEN"), PathwayBase("fra-1", "http://fra-1.test:8080/t/TOKEN"),
         PathwayBase("origin", "http://origin.test")]
STEER = "http://control.test/v1/steer/s-9?title=81239481&proto=dash"


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def render(**kwargs: bool) -> ET.Element:
    template = DashTemplate.build(PACKAGED, base_path="titles/81239481/")
    return ET.fromstring(template.render(BASES, STEER, **kwargs))


def test_the_output_is_an_mpd_in_the_dash_namespace() -> None:
    root = render()
    assert root.tag == f"{{{DASH_NS}}}MPD"
    assert root.get("profiles") == "urn:mpeg:dash:profile:isoff-live:2011"
    assert all(e.tag.startswith(f"{{{DASH_NS}}}") for e in root.iter() if local(e.tag) != "Title")


def test_one_absolute_base_url_per_pathway_in_priority_order() -> None:
    base_urls = render().findall("mpd:BaseURL", NS)
    assert [(b.get("serviceLocation"), b.text) for b in base_urls] == [
        ("lon-2", "http://lon-2.test:8080/t/TOKEN/titles/81239481/"),
        ("fra-1", "http://fra-1.test:8080/t/TOKEN/titles/81239481/"),
        ("origin", "http://origin.test/titles/81239481/"),
    ]


def test_content_steering_element_names_the_pathways_and_the_uri() -> None:
    steering = render().findall("mpd:ContentSteering", NS)
    assert len(steering) == 1  # the packaged one is replaced
    assert steering[0].get("defaultServiceLocation", "").split() == ["lon-2", "fra-1", "origin"]
    assert steering[0].get("queryBeforeStart") == "true"
    assert steering[0].text == STEER  # the & survived escaping
    assert render(query_before_start=False).find("mpd:ContentSteering", NS).get("queryBeforeStart") == "false"  # type: ignore[union-attr]


def test_elements_keep_the_schema_order() -> None:
    order = [local(child.tag) for child in render()]
    assert order == ["ProgramInformation", "BaseURL", "BaseURL", "BaseURL", "ContentSteering", "Period"]  # no Location


def test_the_packagers_location_is_dropped() -> None:
    text = PACKAGED.replace("</Location>", "</Location>\n  <PatchLocation>http://p.example/patch</PatchLocation>")
    root = ET.fromstring(DashTemplate.build(text, base_path="titles/x/").render(BASES, STEER))
    assert root.find("mpd:Location", NS) is None and root.find("mpd:PatchLocation", NS) is None


def test_without_program_information_the_base_urls_come_first() -> None:
    text = re.sub(r"\s*<ProgramInformation>.*?</ProgramInformation>", "", PACKAGED)
    root = ET.fromstring(DashTemplate.build(text, base_path="titles/x/").render(BASES[:1], STEER))
    assert [local(c.tag) for c in root] == ["BaseURL", "ContentSteering", "Period"]


def test_what_lies_below_mpd_level_is_kept() -> None:
    root = render()
    representations = root.findall(".//mpd:Representation", NS)
    assert [r.get("id") for r in representations] == ["720p", "1080p"]
    assert representations[1].findtext("mpd:BaseURL", namespaces=NS) == "hd/"
    template = root.find(".//mpd:SegmentTemplate", NS)
    assert template is not None and template.get("media") == "$RepresentationID$/seg_$Number%05d$.m4s"
    assert root.findtext("mpd:ProgramInformation/mpd:Title", namespaces=NS) == "Big & Bunny"
    assert "packager.example/out/\"" not in ET.tostring(root, encoding="unicode")


def test_other_namespace_prefixes_survive() -> None:
    text = DashTemplate.build(PACKAGED, base_path="titles/x/").render(BASES, STEER)
    assert 'xmlns="urn:mpeg:dash:schema:mpd:2011"' in text
    assert 'cenc:default_KID="10000000-1000-1000-1000-100000000001"' in text
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<MPD ')


def test_for_title_resolves_segments_under_the_mpd_directory() -> None:
    title = Title("81239481", (), (), dash_manifest="titles/81239481/dash/manifest.mpd")
    root = ET.fromstring(DashTemplate.for_title(title, PACKAGED).render(BASES[:1], STEER))
    assert root.findtext("mpd:BaseURL", namespaces=NS) == "http://lon-2.test:8080/t/TOKEN/titles/81239481/dash/"
    bare = Title("42", (), ())
    root = ET.fromstring(DashTemplate.for_title(bare, PACKAGED).render(BASES[:1], STEER))
    assert root.findtext("mpd:BaseURL", namespaces=NS) == "http://lon-2.test:8080/t/TOKEN/titles/42/"


@pytest.mark.parametrize(("text", "words"), [
    ('<?xml version="1.0"?><!DOCTYPE MPD [<!ENTITY x "y">]><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"/>', "DOCTYPE"),
    ("<MPD xmlns='urn:mpeg:dash:schema:mpd:2011'><Period>", "not well-formed"),
    ("<MPD><Period/></MPD>", "root element is 'MPD'"),
    ("<html xmlns='urn:mpeg:dash:schema:mpd:2011'/>", "expected MPD"),
    (PACKAGED.replace("<BaseURL>hd/</BaseURL>", "<BaseURL>http://elsewhere/hd/</BaseURL>"), "absolute"),
    (PACKAGED.replace("<BaseURL>hd/</BaseURL>", "<BaseURL>/hd/</BaseURL>"), "absolute"),
    (PACKAGED.replace("<BaseURL>hd/</BaseURL>", "<BaseURL>//cdn.example/hd/</BaseURL>"), "absolute"),
])
def test_unusable_mpds_are_refused_naming_why(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        DashTemplate.build(text, base_path="titles/x/")


@pytest.mark.parametrize(("bases", "uri", "words"), [
    ([], STEER, "no pathway"),
    ([PathwayBase("a<b", "http://x")], STEER, "pathway id"),
    (BASES, "", "steering URI"),
])
def test_bad_render_arguments_raise_value_error(bases: list[PathwayBase], uri: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        DashTemplate.build(PACKAGED, base_path="titles/x/").render(bases, uri)
