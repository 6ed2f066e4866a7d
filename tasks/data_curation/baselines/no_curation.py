def curate(corpus) -> list[float]:
    """No curation: every scraped document, as scraped, with the same weight."""
    return [1.0] * len(corpus)
