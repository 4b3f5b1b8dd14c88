"""Reject option combinations the generated project cannot run, before any file is written.

Cookiecutter renders this file with Jinja first; the context arrives as JSON (``tojson`` escapes
quotes) so no answer can break the Python syntax.
"""

from __future__ import annotations

import json
import keyword
import sys

CONTEXT: dict[str, object] = json.loads(r"""{{ cookiecutter | tojson }}""")
PYTHON_VERSIONS = ("3.11", "3.12", "3.13", "3.14")  # the CI matrix and classifiers list the same
TOML_STRINGS = (
    "project_name",
    "description",
    "author_name",
    "author_email",
)  # quoted in pyproject.toml


def problem(context: dict[str, object]) -> str | None:
    """The first reason ``context`` cannot be generated, naming the option; None when it is fine."""
    slug = str(context["project_slug"])
    if not slug.isidentifier() or keyword.iskeyword(slug):
        return f"project_slug {slug!r} is not a valid Python identifier (letters, digits, underscores; not a keyword)"
    for option in TOML_STRINGS:
        if any(char in str(context[option]) for char in '"\\\n'):
            return f"{option} must not contain a double quote, backslash or newline (it is a TOML string)"
    workers = str(context["web_workers"]).strip()
    if not (workers.isdigit() and int(workers) > 0):
        return f"web_workers {workers!r} is not a positive integer"
    layer = context["channel_layer"]
    if layer == "inmemory" and int(workers) > 1:
        return (
            f"web_workers={workers} needs a broker: channel_layer=inmemory cannot cross processes;"
            " pick redis, rabbitmq, nats or postgresql, or web_workers=1"
        )
    if layer == "inmemory" and context["use_celery"] == "yes":
        return (
            "use_celery=yes needs a broker: channel_layer=inmemory cannot cross processes;"
            " pick redis, rabbitmq, nats or postgresql, or use_celery=no"
        )
    version = str(context["python_version"]).strip()
    if version not in PYTHON_VERSIONS:
        return f"python_version {version!r} is not supported: use one of {', '.join(PYTHON_VERSIONS)}"
    return None


if __name__ == "__main__":
    reason = problem(CONTEXT)
    if reason:
        print(f"ERROR: {reason}", file=sys.stderr)
        sys.exit(1)
