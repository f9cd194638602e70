"""Manifest writers of the control plane: HLS multivariant playlists, DASH MPDs, steering manifests, and the
steering query a player sends back. Pure: values in, text out; no I/O."""

from control.manifests.common import PathwayBase
from control.manifests.dash import DASH_NS, DashTemplate
from control.manifests.hls import HlsTemplate
from control.manifests.query import SteeringQuery, parse_steering_query, reports_leaving
from control.manifests.steering_manifest import steering_manifest

__all__ = ["DASH_NS", "DashTemplate", "HlsTemplate", "PathwayBase", "SteeringQuery", "parse_steering_query",
           "reports_leaving", "steering_manifest"]
