"""Web: the FastAPI app, authentication, the JSON API and the console's routers and templates."""
