"""Where segmentation and patch featurisation run: in this process, or sharded over Ray workers."""
