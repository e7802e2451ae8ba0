"""The HTML pages, by area. Each view looks its object up through `accessreq.access`, calls one domain function and
maps the domain's refusals to the page through `common.act` (or `common.status_for` for htmx fragments)."""
