"""The one config schema shared by every command."""
from detkit.config.loader import dump_yaml, from_dict, load_config, merged_dict, to_dict
from detkit.config.schema import Config

__all__ = ["Config", "dump_yaml", "from_dict", "load_config", "merged_dict", "to_dict"]
