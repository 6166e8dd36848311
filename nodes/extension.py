"""The ComfyUI extension object listing this pack's nodes."""
from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .analysis_nodes import NODES as ANALYSIS_NODES
from .cag_nodes import NODES as CAG_NODES
from .capture_nodes import NODES as CAPTURE_NODES
from .motion_nodes import NODES as MOTION_NODES
from .propagate_nodes import NODES as PROPAGATE_NODES
from .track_nodes import NODES as TRACK_NODES

ALL_NODES: list[type[io.ComfyNode]] = [*CAPTURE_NODES, *TRACK_NODES, *PROPAGATE_NODES, *MOTION_NODES, *ANALYSIS_NODES, *CAG_NODES]


class DiffTrackExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(ALL_NODES)
