"""attnsearch: the Python client of the attnsearch search server.

    from attnsearch import Client
    with Client("127.0.0.1:50051") as c:
        hits = c.search("docs", text="copy files securely", top_k=5).hits
"""

from . import errors
from .client import Client, Document, Hit, SearchResult, TokenMatch
from .errors import AttnsearchError

__all__ = ["Client", "Document", "Hit", "SearchResult", "TokenMatch", "AttnsearchError",
           "errors"]
