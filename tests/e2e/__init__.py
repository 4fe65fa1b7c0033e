"""End-to-end checks outside the installed package: a real Jupyter server (:mod:`e2e.lab`) and
headless Chromium on the built book and on JupyterLab (:mod:`e2e.browser_check`).

Importable as ``e2e`` with ``tests/`` on the path: pytest puts it there for the tests
(``tests/test_smoke_book.py``), and ``make e2e`` runs ``PYTHONPATH=tests python -m e2e.browser_check``.
"""
