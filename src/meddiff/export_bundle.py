"""The old import path of meddiff.export.bundle (a MONAI bundle folder around a DDPM checkpoint).

Kept because every bundle's configs/inference.json names it (`$from meddiff import export_bundle`,
`meddiff.export_bundle.BundleUNet`, `export_bundle.load_state`, `export_bundle.restore_folder`): the bundles
written so far load through it. Import from meddiff.export.bundle.
"""

from .export.bundle import (SCHEMA_FILE, BundleUNet, bundle_metadata, export_monai_bundle, inference_config,
                            licence_text, load_state, metadata_schema, restore_folder)

__all__ = ["SCHEMA_FILE", "BundleUNet", "bundle_metadata", "export_monai_bundle", "inference_config", "licence_text",
           "load_state", "metadata_schema", "restore_folder"]
