"""The browser: five tools over a web state.

A web state holds ``pages`` (a copy-on-write :class:`envs.state.Table` of the world's site, keyed by
URL: every episode shares the same pages) and ``browser``, the episode's own plain JSON:
``{"url": current page, "top": first line in the window, "history": [[url, top], ...]}``.

The window shows ``VIEW_LINES`` lines of the current page under a header naming the URL, the title
and the position, so an agent always knows where it is. Every tool returns that view (or an
``Error: …`` text that leaves the browser exactly as it was), which is also what the scripted
challenger reads when it explores the site.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from envs.state import State

VIEW_LINES = 10
"""Lines of a page shown at once; scrolling moves the window by this much."""

SEPARATOR = "---"
"""The line between a view's header and the page's lines (no page line is ever this)."""


def render(state: State) -> str:
    """The browser window: where it is, then the lines in view (links written ``[text](/url)``)."""
    browser = state["browser"]
    page = state["pages"].get_readonly(browser["url"])
    lines, top = page["lines"], browser["top"]
    shown = lines[top:top + VIEW_LINES]
    below = len(lines) - top - len(shown)
    notes = []
    if top:
        notes.append(f"{top} {_lines(top)} above (scroll_up)")
    notes.append(f"{below} more {_lines(below)} below (scroll_down)" if below else "end of page")
    header = [f"Current page: {browser['url']} ({page['title']})",
              f"Showing lines {top + 1}-{top + len(shown)} of {len(lines)}; {', '.join(notes)}."]
    return "\n".join(header + [SEPARATOR] + shown)


def _lines(n: int) -> str:
    return "line" if n == 1 else "lines"


def _resolve(state: State, url: str) -> str | None:
    """The site URL that ``url`` names: a path such as ``/staff``, also written without the leading
    slash, with a trailing slash, or as a full address (only its path and query count); None for
    any other, an address ``urlsplit`` cannot read (``http://[::1``) among them."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    path = parts.path if parts.path.startswith("/") else "/" + parts.path
    if len(path) > 1:
        path = path.rstrip("/")
    target = f"{path}?{parts.query}" if parts.query else path
    return target if target in state["pages"] else None


def view(state: State) -> str:
    """Show the part of the current page that is in the browser window, with its links.

    Args:
        state: The episode state (not shown to the agent).
    """
    return render(state)


def click_url(state: State, url: str) -> str:
    """Open a page of the site by its URL (pages show links as [text](/url)) and show its top.

    Args:
        state: The episode state (not shown to the agent).
        url: The URL of the page to open, such as "/products?page=2".
    """
    target = _resolve(state, url)
    browser = state["browser"]
    if target is None:
        return f"Error: there is no page {url!r} on this site; the browser is still on {browser['url']}."
    browser["history"].append([browser["url"], browser["top"]])
    browser["url"], browser["top"] = target, 0
    return render(state)


def go_to_previous_page(state: State) -> str:
    """Go back to the previous page, at the position it was left at.

    Args:
        state: The episode state (not shown to the agent).
    """
    browser = state["browser"]
    if not browser["history"]:
        return f"Error: there is no previous page; the browser is still on {browser['url']}, the first page it opened."
    browser["url"], browser["top"] = browser["history"].pop()
    return render(state)


def scroll_down(state: State) -> str:
    """Scroll the window down to the next lines of the current page.

    Args:
        state: The episode state (not shown to the agent).
    """
    browser = state["browser"]
    total = len(state["pages"].get_readonly(browser["url"])["lines"])
    if browser["top"] + VIEW_LINES >= total:
        return f"Error: already at the bottom of {browser['url']} (it has {total} lines); nothing more below."
    browser["top"] += VIEW_LINES
    return render(state)


def scroll_up(state: State) -> str:
    """Scroll the window up to the previous lines of the current page.

    Args:
        state: The episode state (not shown to the agent).
    """
    browser = state["browser"]
    if browser["top"] == 0:
        return f"Error: already at the top of {browser['url']}; nothing more above."
    browser["top"] = max(0, browser["top"] - VIEW_LINES)
    return render(state)


TOOLS = (click_url, go_to_previous_page, scroll_down, scroll_up, view)
