"""The README's node tables say exactly what the node schemas have: every input documented, no stale row."""
import re

from difftrack_devkit.host import REPO
from difftrack_pack.nodes.extension import ALL_NODES as NODES  # every node the pack registers


def documented_inputs(readme: str) -> dict[str, set[str]]:
    """For each `### ` node section, the backticked names in the first column of its `| input | meaning |` table,
    keyed by every node display name in the heading."""
    sections = {}
    for part in re.split(r"^### ", readme, flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        names = set()
        in_table = False
        for line in body.splitlines():
            if line.startswith("## "):
                break
            if re.match(r"\|\s*input\s*\|", line):
                in_table = True
            elif in_table and line.startswith("|") and not line.startswith("| ---"):
                names.update(re.findall(r"`([a-z_0-9]+)`", line.split("|")[1]))
            elif in_table and not line.startswith("|"):
                in_table = False
        for title in heading.split(", "):
            sections[title.strip()] = names
    return sections


def mismatches(readme: str, nodes=NODES) -> list[str]:
    """What the README gets wrong about the nodes' inputs, one line each (empty when it is right)."""
    sections = documented_inputs(readme)
    problems = []
    headings: dict[str, set[str]] = {}
    for node in nodes:
        schema = node.define_schema()
        if schema.display_name not in sections:
            problems.append(f"no README section '### {schema.display_name}'")
            continue
        inputs = {spec.id for spec in schema.inputs}
        missing = inputs - sections[schema.display_name]
        if missing:
            problems.append(f"{schema.display_name}: inputs not in its table: {sorted(missing)}")
        headings.setdefault(schema.display_name, set()).update(inputs)
    # A row is stale when no node sharing the section has that input.
    shared: dict[frozenset, set[str]] = {}
    for title, names in sections.items():
        if title in headings:
            shared.setdefault(frozenset(names), set()).update(headings[title])
    for names, inputs in shared.items():
        stale = set(names) - inputs
        if stale:
            problems.append(f"rows for inputs no node has: {sorted(stale)}")
    return problems


def test_readme_documents_every_node_input_and_nothing_else():
    assert mismatches((REPO / "README.md").read_text()) == []


def test_a_missing_or_stale_row_is_caught():
    readme = (REPO / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `cycle_tolerance` |"))
    assert mismatches(readme.replace(row + "\n", "")) == [
        "Track Points (DiffTrack): inputs not in its table: ['cycle_tolerance']"]
    assert mismatches(readme.replace(row, row + "\n| `old_knob` | gone |")) == [
        "rows for inputs no node has: ['old_knob']"]
