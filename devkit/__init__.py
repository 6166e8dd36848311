"""Development kit of the DiffTrack node pack, shared by tests/, bench/ and tools/ (not shipped to ComfyUI users).

host        finding ComfyUI and importing it with this pack (`difftrack_pack`)
families    one row per supported model family: tiny test cases, q/k references, benchmark sizes
models      real ComfyUI model classes with random weights, conditioning, sampling
qk_references  q/k recomputed from a block's own weights
nodes       calling a node by keyword, filled from its schema's defaults
server      a headless ComfyUI server and the UI -> API workflow converter (standard library only)
testbed     a server with this pack, tiny models and a clip laid out (e2e tests, workflow building)
oracle_scene   a synthetic clip with exact descriptors (core tests)

Installed with the pack by `pip install -e .` (see pyproject.toml), so nothing edits sys.path.
"""
