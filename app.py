"""CRoFT Lab: the Gradio app (what a Hugging Face Space runs). The app lives in ``croft_app``:
``croft_app/ui`` lays out the tabs and wires the events, ``croft_app/service`` decides everything
without gradio, and ``croft_core`` is the library. Configuration is by environment variable
(``CROFT_BACKBONE``, ``CROFT_CHECKPOINTS``, ... and Gradio's ``GRADIO_SERVER_NAME`` /
``GRADIO_SERVER_PORT``; see docs/APP.md)."""

import logging

from croft_app.ui.app import create_app, launch

demo, RESOURCES = create_app()

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch(demo, RESOURCES)
