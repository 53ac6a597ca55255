"""`humantag serve [DEST]`: the search page and JSON API on http://127.0.0.1:8080/."""

from __future__ import annotations

import logging
import socket
from typing import Any, Optional

import typer

from humantag.flows.commands import opensearch_options as os_opts
from humantag.flows.errors import UserError

log = logging.getLogger("humantag.serve")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket bound before the server starts: a taken port is a one-line error, port 0 picks one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UserError(f"--host {host!r}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


@os_opts.with_opensearch_flags()
def serve(
    dest: Optional[str] = typer.Argument(None, envvar="HUMANTAG_OUT", show_default=False,
                                         help="A labeling output (folder or s3:// prefix, the --out of `run`): searched "
                                              "with DuckDB over DEST/labels when no OpenSearch is configured."),
    host: str = typer.Option("127.0.0.1", "--host", envvar="HUMANTAG_HOST",
                             help="Address to listen on. The page has no login: use 0.0.0.0 only behind your own access control."),
    port: int = typer.Option(8080, "--port", "-p", envvar="HUMANTAG_PORT", min=0, max=65535,
                             help="Port to listen on (0: any free port; the URL is printed)."),
    thumbnail_size: int = typer.Option(256, "--thumbnail-size", envvar="HUMANTAG_THUMBNAIL_SIZE", min=32, max=1024,
                                       help="Long side of the thumbnails, in pixels."),
    thumbnail_cache_mb: int = typer.Option(64, "--thumbnail-cache-mb", envvar="HUMANTAG_THUMBNAIL_CACHE_MB", min=0,
                                           help="Memory for recently served thumbnails (LRU), in MiB."),
    max_image_mb: int = typer.Option(64, "--max-image-mb", envvar="HUMANTAG_MAX_IMAGE_MB", min=1,
                                     help="Source images larger than this get no thumbnail."),
    opensearch: os_opts.OpenSearchFlags = os_opts.OpenSearchFlags(),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", envvar="AWS_ENDPOINT_URL",
                                               help="S3 endpoint (for S3-compatible servers), for DEST and the source images."),
    aws_access_key_id: Optional[str] = typer.Option(None, "--aws-access-key-id", envvar="AWS_ACCESS_KEY_ID",
                                                    help="S3 access key.", show_default=False),
    aws_secret_access_key: Optional[str] = typer.Option(None, "--aws-secret-access-key", envvar="AWS_SECRET_ACCESS_KEY",
                                                        help="S3 secret key.", show_default=False),
    region: Optional[str] = typer.Option(None, "--region", envvar="AWS_REGION", help="S3 region."),
) -> None:
    """Serve a search page (facets, thumbnails, details) and its JSON API over the labels.

    Answers from OpenSearch when one is configured (--opensearch-url or
    OPENSEARCH_URL), else from the Parquet files under DEST/labels. Thumbnails
    are made from the source images, read with this server's storage
    credentials; only images in the index can be read. API: /api/search,
    /api/fields, /api/documents/ID, /api/thumbnails/ID.jpg (see /api/docs).
    """
    import uvicorn

    from humantag.indexers.search.backends import open_backend
    from humantag.indexers.search.model import SearchUnavailable
    from humantag.indexers.web import create_app
    from humantag.workers.storage import StorageOptions

    settings = opensearch.settings()
    if settings is None and not dest:
        raise UserError("nothing to serve: give DEST (the --out of a run) or configure OpenSearch (--opensearch-url / OPENSEARCH_URL)")
    storage = StorageOptions.from_env(endpoint_url=endpoint_url, key=aws_access_key_id,
                                      secret=aws_secret_access_key, region=region)
    sock = _listen(host, port)
    backend: Any = None
    try:
        try:
            backend = open_backend(dest, settings, storage)
        except SearchUnavailable as exc:
            raise UserError(str(exc)) from None
        app = create_app(backend, storage, thumbnail_px=thumbnail_size,
                         thumbnail_cache_bytes=thumbnail_cache_mb * 2**20, max_source_bytes=max_image_mb * 2**20)
        verbose = logging.getLogger().getEffectiveLevel() <= logging.INFO
        config = uvicorn.Config(app, log_config=None, access_log=verbose, server_header=False,
                                timeout_graceful_shutdown=5, lifespan="off")
        server = uvicorn.Server(config)
        url = _url(sock)
        if host in ("0.0.0.0", "::"):
            typer.echo("humantag: warning: listening on every interface; the page has no login", err=True)
        typer.echo(f"humantag: serving {backend.describe()} on {url} (Ctrl-C to stop)")
        log.info("serving %s on %s", backend.describe(), url)
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # a second Ctrl-C during shutdown: stop quietly, nothing to resume
            pass
    finally:
        sock.close()
        if backend is not None:
            backend.close()
