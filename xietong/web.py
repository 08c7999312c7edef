"""The one way a service of the platform builds its FastAPI app: API docs served locally.

FastAPI's interactive docs (``/docs``, Swagger UI; ``/redoc``, ReDoc) load their
JavaScript, CSS and icon from public CDNs (jsdelivr, fastapi.tiangolo.com) by default.
A government network has no route to them, and the page stays blank. Every service
therefore builds its app here: the assets come from the ``fastapi-offline`` package
(which ships Swagger UI's and ReDoc's bundles) and are served by the service itself,
under ``<prefix>/docs-assets/`` beside its docs pages::

    from xietong.web import api_app

    app = api_app(title="Xietong registry", version="1")            # /docs, /redoc
    app = api_app(title="…", openapi_url="/v1/openapi.json",
                  docs_url="/v1/docs", redoc_url="/v1/redoc")      # assets under /v1/

Swagger UI's online validator badge (an image fetched from validator.swagger.io) is
switched off too, so a Swagger UI page opened on an isolated network makes no request
outside the service. (ReDoc's bundle asks for one image of its own, the Redocly logo
beside "API docs by Redocly"; refused, it hides itself.) ``tests/unit/test_api_docs.py``
checks every service's pages reference only their own URLs, and
``tests/integration/test_api_docs.py`` renders one in a browser with the network closed.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

DOCS_ASSETS = "docs-assets"
"""The folder, beside a service's docs page, its Swagger UI and ReDoc assets are served from."""


def api_app(
    *,
    docs_url: str | None = "/docs",
    redoc_url: str | None = "/redoc",
    openapi_url: str = "/openapi.json",
    swagger_ui_parameters: dict[str, Any] | None = None,
    **fastapi_arguments: Any,
) -> FastAPI:
    """A :class:`FastAPI` app whose docs pages load nothing from outside the service.

    Every other keyword (``title``, ``version``, ``description``, ``lifespan`` …) goes
    to FastAPI unchanged. ``docs_url`` or ``redoc_url`` ``None`` leaves that page out.
    """
    prefix = (docs_url or redoc_url or openapi_url).rpartition("/")[0]
    return FastAPIOffline(
        docs_url=docs_url,
        redoc_url=redoc_url,
        openapi_url=openapi_url,
        static_url=f"{prefix}/{DOCS_ASSETS}",
        swagger_ui_parameters={"validatorUrl": None, **(swagger_ui_parameters or {})},
        **fastapi_arguments,
    )
