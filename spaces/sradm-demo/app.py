"""Hugging Face Spaces entry point: the same page as `sradm demo`, from the installed sradm-diffusers package.

Spaces runs `python app.py` and sets GRADIO_SERVER_NAME/GRADIO_SERVER_PORT; launch() leaves both to Gradio.
"""

from sradm_diffusers.commands.demo import launch

if __name__ == "__main__":
    launch()
