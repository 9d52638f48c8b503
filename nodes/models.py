"""The ``fye`` models folder (models/fye, plus any ``fye:`` entries of extra_model_paths.yaml)."""
import os

import folder_paths

FOLDER = "fye"
EXTENSIONS = {*folder_paths.supported_pt_extensions, ".task"}


def register_model_folder() -> None:
    # extra_model_paths.yaml is applied before custom nodes load: add our default, never replace theirs.
    folder_paths.add_model_folder_path(FOLDER, os.path.join(folder_paths.models_dir, FOLDER))
    paths, extensions = folder_paths.folder_names_and_paths[FOLDER]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(extensions) | EXTENSIONS)


def model_dirs() -> list[str]:
    return folder_paths.get_folder_paths(FOLDER)
