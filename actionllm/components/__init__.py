"""Parts more than one method uses and no method owns: backbone loading, LoRA and its folder, pooling heads,
label scoring, clips, graph convolutions. Components import the contract and each other, never a method."""
