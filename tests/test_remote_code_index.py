"""loading.remote_code.installed_model_index entry by entry (mutants of its conditions survived the loading tests)."""

from sradm_diffusers.loading.remote_code import installed_model_index


def test_only_shipped_entries_naming_public_classes_are_mapped():
    index = {
        "_class_name": ["pipeline_sradm", "SRADMPipeline"],
        "_diffusers_version": "0.42.0",
        "unet": ["sradm_unet", "SRADMUNet"],
        "lr_encoder": ["sradm_rrdb_encoder", "RRDBEncoder"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "private": ["sradm_unet", "NotAPublicClass"],
        "pipeline_elsewhere": ["pipeline_sradm", "SRADMPipeline"],
        "public_outside": ["other_library", "SRADMUNet"],
    }
    mapped = installed_model_index(index)
    assert mapped == {
        **index,
        "_class_name": "SRADMPipeline",
        "unet": ["sradm_diffusers", "SRADMUNet"],
        "lr_encoder": ["sradm_diffusers", "RRDBEncoder"],
    }
    assert index["_class_name"] == ["pipeline_sradm", "SRADMPipeline"]  # the input is not changed


def test_a_class_name_entry_is_mapped_only_from_the_pipeline_module():
    index = {"_class_name": ["sradm_unet", "SRADMUNet"], "unet": ["sradm_unet", "SRADMUNet"]}
    assert installed_model_index(index) == {"_class_name": ["sradm_unet", "SRADMUNet"],
                                             "unet": ["sradm_diffusers", "SRADMUNet"]}
