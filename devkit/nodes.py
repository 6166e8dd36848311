"""Calling a V3 node by keyword, the way a saved workflow would: every widget at its schema default unless given."""
from __future__ import annotations


def schema_inputs(node) -> list:
    """The node's inputs (io.*.Input objects) in schema order."""
    return list(node.define_schema().inputs)


def run_node(node, **given):
    """`node.execute(...)` with every widget input at its default (a combo without one at its first option, as the
    frontend does) and `given` on top. A name the schema does not have, or a required input left without a value,
    raises TypeError: adding an input to a node can never silently shift a test's arguments.
    Returns the io.NodeOutput (`.args`, `.ui`)."""
    inputs = schema_inputs(node)
    names = {spec.id for spec in inputs}
    unknown = sorted(set(given) - names)
    if unknown:
        raise TypeError(f"{node.__name__} has no input(s) {unknown}; it has {sorted(names)}")
    values = {}
    for spec in inputs:
        if spec.id in given:
            values[spec.id] = given[spec.id]
        elif getattr(spec, "default", None) is not None:
            values[spec.id] = spec.default
        elif getattr(spec, "options", None):
            values[spec.id] = spec.options[0]
        elif not spec.optional:
            raise TypeError(f"{node.__name__} needs a value for its input {spec.id!r}")
    return node.execute(**values)
