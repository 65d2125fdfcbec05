"""The object fluxmem's ``lmms_eval.models`` entry point names: lmms-eval's ``ModelManifest`` for
``fluxmem_qwen2_5_vl`` (alias ``fluxmem``), whose chat class is ours.

Kept tiny: lmms-eval loads every entry point when ``lmms_eval.models`` is imported, and the class
itself is imported only when the model is asked for.
"""

from lmms_eval.models.registry_v2 import ModelManifest

from . import CHAT_CLASS_PATH, MODEL_NAME

MANIFEST = ModelManifest(model_id=MODEL_NAME, chat_class_path=CHAT_CLASS_PATH, aliases=("fluxmem",))
