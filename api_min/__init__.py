"""The HTTP submission API (FastAPI): validates requests, writes job and voice rows, enqueues
after commit, answers status and serves results. Thin: no model code here."""
