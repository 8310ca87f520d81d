"""How an SRADM pipeline is saved to and loaded from folders and the Hub: :class:`SRADMHubMixin`.

Kept apart from the sampling code in :mod:`sradm_diffusers.pipeline`, whose class reads as the paper's loop. The
mixin adds to ``DiffusionPipeline``'s own loading and saving:

- components are recorded under the package's public name (``["sradm_diffusers", "SRADMUNet"]``), so that moving a
  module inside the package never breaks a published checkpoint;
- ``save_pretrained`` also writes the self-contained code files that ``trust_remote_code`` loading needs
  (:mod:`.remote_code`), before an optional upload;
- ``from_pretrained`` checks a local folder first and turns loading failures into one-line explanations
  (:mod:`.hub`); ``load_config`` maps the shipped modules named in a saved ``model_index.json`` back to the
  installed classes.
"""

from __future__ import annotations

import os

from .remote_code import INSTALLED, installed_model_index, write_remote_code

# Public import path recorded for the components in the pipeline's config, so that moving a module never breaks a
# published checkpoint (a saved model_index.json names the shipped modules instead; remote_code maps them back).
_LIBRARY = "sradm_diffusers"


class SRADMHubMixin:
    """Saving and loading of :class:`~sradm_diffusers.SRADMPipeline` (put before ``DiffusionPipeline`` in the
    bases; every method defers to it through ``super()``)."""

    def register_to_config(self, **kwargs):
        # diffusers records a component of an unknown library by its defining module; record the public name.
        for name, value in kwargs.items():
            if isinstance(value, (tuple, list)) and len(value) == 2 and str(value[0]).startswith(_LIBRARY + "."):
                kwargs[name] = (_LIBRARY, value[1])
        super().register_to_config(**kwargs)

    @classmethod
    def load_config(cls, *args, **kwargs):
        # A saved folder names the modules it ships for trust_remote_code loading; where this package is installed,
        # its own classes load instead (remote_code.installed_model_index).
        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (installed_model_index(loaded[0]), *loaded[1:])
        return installed_model_index(loaded)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """``DiffusionPipeline.save_pretrained``, plus the code that lets diffusers load the folder without this
        package: ``pipeline_sradm.py`` and ``unet/``, ``lr_encoder/`` modules generated from the package's source
        (:mod:`~.loading.remote_code`), named in ``model_index.json``. With ``push_to_hub=True`` the folder is
        uploaded once those files are written (diffusers' keyword arguments: ``repo_id``, ``token``, ``private``...).
        """
        hub = {k: kwargs.pop(k) for k in ("commit_message", "private", "create_pr", "token", "repo_id") if k in kwargs}
        super().save_pretrained(
            save_directory, safe_serialization, variant, max_shard_size, push_to_hub=False, **kwargs
        )
        write_remote_code(self, save_directory)
        if push_to_hub:
            from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card
            from huggingface_hub import create_repo

            token = hub.get("token")
            repo_id = hub.get("repo_id", os.fspath(save_directory).split(os.path.sep)[-1])
            repo_id = create_repo(repo_id, exist_ok=True, private=hub.get("private"), token=token).repo_id
            card = populate_model_card(load_or_create_model_card(repo_id, token=token, is_pipeline=True))
            card.save(os.path.join(save_directory, "README.md"))
            self._upload_folder(save_directory, repo_id, token=token, commit_message=hub.get("commit_message"),
                                create_pr=hub.get("create_pr", False))

    @classmethod
    def download(cls, pretrained_model_name, **kwargs) -> str:
        """Fetch (or find in the local cache) a Hub repository holding an SRADM pipeline; returns its folder."""
        if not INSTALLED:  # shipped code: diffusers' own download
            return super().download(pretrained_model_name, **kwargs)
        from .hub import resolve_pipeline_folder

        return resolve_pipeline_folder(pretrained_model_name, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load from a local pipeline folder or a Hub repository id (works offline from the Hub cache).

        See ``diffusers.DiffusionPipeline.from_pretrained`` for the keyword arguments. The installed package checks
        a local folder first and explains a failure in one line; shipped code (``trust_remote_code``) loads as
        diffusers does.
        """
        if not INSTALLED:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        from .hub import check_pipeline_folder, explain_load_error

        if os.path.isdir(pretrained_model_name_or_path):
            check_pipeline_folder(pretrained_model_name_or_path)
        try:
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except (RuntimeError, ValueError, OSError) as error:
            raise explain_load_error(pretrained_model_name_or_path, error) from error
