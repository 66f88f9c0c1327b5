"""The resource that makes unsubscribe links in the messages step: the signing secret (a
`dg.EnvVar`, never a value in the UI or the run config) and the public base URL of the endpoint."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from outbound_pipeline.unsubscribe.links import link_maker

BASE_URL_ENV = "OUTBOUND_UNSUBSCRIBE_BASE_URL"


class UnsubscribeLinksResource(dg.ConfigurableResource):
    """Signs each recipient's unsubscribe link. Without a secret or a base URL it makes none, and a
    campaign whose template asks for the link fails its messages step saying which is missing."""

    secret: str | None = None
    base_url: str | None = None

    def maker(self) -> Callable[[str, str], str] | None:
        """(phone, "link" or "token") -> the value; None when not configured."""
        secret = self.secret.get_value() if isinstance(self.secret, dg.EnvVar) else self.secret
        if not secret or not self.base_url:
            return None
        return link_maker(secret, self.base_url)
