"""`humantag serve`: a JSON API and a search page with facets and thumbnails over any search backend."""

from humantag.indexers.web.app import create_app

__all__ = ["create_app"]
