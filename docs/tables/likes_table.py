r"""The framework mirrors check_loss takes as ``like=``: how each is called, and its recombination rule.

``render()`` reads the registry :mod:`maskloss.testing.likes` and returns a markdown table: the
mirror, the batch kind, the call check_loss makes (the candidate is called the same way), the
options with their defaults, and what the convention reads at padded steps. The page
``docs/course/08-testing.md`` includes it.
"""

from __future__ import annotations


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render() -> str:
    """The mirrors table, computed now (markdown)."""
    from maskloss.testing import likes

    lines = [
        "| like | kind | how it is called | options (defaults) | padded content |",
        "|---|---|---|---|---|",
    ]
    for spec in likes.registered():
        opts = ", ".join(f"`{k}={v!r}`" for k, v in spec.defaults.items()) or "none"
        if spec.required:
            opts += " (required: " + ", ".join(f"`{k}`" for k in spec.required) + ")"
        padding = spec.reads_padding or "never read"
        lines.append(
            f"| `{spec.name}` | {spec.kind} | `{_cell(spec.how)}` | {_cell(opts)} | {_cell(padding)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render())
