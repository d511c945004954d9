"""todo-api: the application shell (settings, app factory, problem mapping, CLI)."""

import warnings

# Connexion imports Starlette's test client at start-up, which warns about httpx: noise for operators.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
