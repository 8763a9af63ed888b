namespace FluxNative;

/// <summary>One tensor of a checkpoint, as its safetensors or GGUF header declares it.</summary>
/// <param name="Name">The tensor's name in the file (e.g. <c>double_blocks.0.img_attn.qkv.weight</c>).</param>
/// <param name="DType">The stored element type.</param>
/// <param name="Shape">The dimensions, outermost first; empty for a scalar.</param>
/// <param name="ByteSize">Bytes of stored data.</param>
/// <param name="ElementCount">The product of <paramref name="Shape"/> (1 for a scalar).</param>
/// <param name="File">The file holding the tensor (one of the shards for a sharded checkpoint).</param>
/// <param name="FileOffset">The absolute offset of the data in <paramref name="File"/>.</param>
public sealed record TensorInfo(
    string Name,
    DType DType,
    IReadOnlyList<long> Shape,
    long ByteSize,
    long ElementCount,
    string File,
    long FileOffset)
{
    /// <summary>
    /// For a GGUF block-quantised tensor, ggml's type name ("Q8_0", "Q4_K", ...): <see cref="DType"/> is then
    /// <see cref="FluxNative.DType.F32"/>, what its values read as, and <see cref="ByteSize"/> the blocks' size.
    /// Null otherwise.
    /// </summary>
    public string? BlockType { get; init; }

    /// <summary>The stored type's name: <see cref="BlockType"/>, else the safetensors dtype name.</summary>
    public string StoredTypeName => BlockType ?? DType.SafetensorsName();

    /// <summary>The shape as text, e.g. <c>[3072, 64]</c>.</summary>
    public string ShapeText => $"[{string.Join(", ", Shape)}]";

    /// <summary>Equal when every field is, the shape compared element by element.</summary>
    public bool Equals(TensorInfo? other) =>
        other is not null
        && Name == other.Name
        && DType == other.DType
        && BlockType == other.BlockType
        && Shape.SequenceEqual(other.Shape)
        && ByteSize == other.ByteSize
        && ElementCount == other.ElementCount
        && File == other.File
        && FileOffset == other.FileOffset;

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(Name, DType, ByteSize, File, FileOffset);
}
