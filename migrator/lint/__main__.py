"""``python -m migrator.lint``: print docs/lint-rules.md, generated from the rule registry."""

import sys

from migrator.lint.rules import render_markdown

sys.stdout.write(render_markdown())
