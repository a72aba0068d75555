"""Links from the pages to the methodology's definitions (/methodology/#anchor)."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from leaderboard.methodology import by_anchor

register = template.Library()


@register.simple_tag
def def_url(anchor: str) -> str:
    """/methodology/#anchor; an anchor the methodology does not define is an error, so a
    page can never link to a definition that is not there (tests/test_layout.py)."""
    if anchor not in by_anchor():
        raise template.TemplateSyntaxError(f"the methodology defines no #{anchor}")
    return f"{reverse('methodology')}#{anchor}"


@register.simple_tag
def def_link(anchor: str, text: str = "?") -> SafeString:
    """A small "?" link to a definition, its one-line summary as the title."""
    definition = by_anchor().get(anchor)
    url = def_url(anchor)
    return format_html('<a class="def" href="{}" title="Definition: {}">{}<span class="sr-only"> ({} defined)</span></a>',
                       url, definition.short, text, definition.title.replace("`", ""))
