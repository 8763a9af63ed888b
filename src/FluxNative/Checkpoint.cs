using System.Collections.ObjectModel;
using System.Runtime.InteropServices;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// A checkpoint opened by the native library: one <c>.safetensors</c> file, a
/// <c>*.safetensors.index.json</c> with its shards, or a folder holding either (diffusers layout).
/// Every header is validated when it is opened; tensor data is memory-mapped and read only when asked for.
/// </summary>
/// <remarks>
/// Safe to query and read from any number of threads at once. <see cref="Dispose"/> waits for no one:
/// a read still running on another thread keeps the native checkpoint open until it returns.
/// </remarks>
public sealed class Checkpoint : IDisposable
{
    private readonly CheckpointHandle handle;
    private readonly ReadOnlyCollection<TensorInfo> tensors;

    private Checkpoint(string path, CheckpointHandle handle, TensorInfo[] tensors)
    {
        Path = path;
        this.handle = handle;
        this.tensors = Array.AsReadOnly(tensors);
    }

    /// <summary>The path the checkpoint was opened from.</summary>
    public string Path { get; }

    /// <summary>Every tensor, sorted by name. The strings were copied when the checkpoint was opened.</summary>
    public IReadOnlyList<TensorInfo> Tensors
    {
        get
        {
            ThrowIfDisposed();
            return tensors;
        }
    }

    /// <summary>
    /// Opens and validates a checkpoint.
    /// </summary>
    /// <param name="path">A <c>.safetensors</c> file, a <c>*.safetensors.index.json</c>, or a folder holding one of them.</param>
    /// <exception cref="FluxNativeException">
    /// The path does not exist (<see cref="FluxStatus.Io"/> or <see cref="FluxStatus.NotFound"/>) or a file
    /// is corrupt or truncated (<see cref="FluxStatus.Format"/>); the message names the file and tensor.
    /// </exception>
    public static Checkpoint Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        NativeStatus.ThrowIfFailed(NativeMethods.fx_checkpoint_open(path, out CheckpointHandle handle));
        try
        {
            return new Checkpoint(path, handle, ReadTensorInfos(handle));
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>The tensor called <paramref name="name"/>, or null if there is none.</summary>
    public TensorInfo? Find(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        return TryIndexOf(name, out int index) ? tensors[index] : null;
    }

    /// <summary>Reads a tensor converted to float32 (from any floating-point dtype, converted natively).</summary>
    /// <exception cref="FluxNativeException">No such tensor (<see cref="FluxStatus.NotFound"/>), or a dtype that does not convert.</exception>
    public float[] ReadFloat32(string name)
    {
        TensorInfo tensor = Get(name);
        // Every element is overwritten by the read, so the array need not be zeroed first.
        float[] values = GC.AllocateUninitializedArray<float>(checked((int)tensor.ElementCount));
        ReadFloat32(name, values);
        return values;
    }

    /// <summary>Reads a tensor converted to float32 into <paramref name="destination"/>, which must hold every element.</summary>
    public void ReadFloat32(string name, Span<float> destination) =>
        Read(name, DType.F32, MemoryMarshal.AsBytes(destination));

    /// <summary>
    /// Reads a tensor into <paramref name="destination"/> as <paramref name="dtype"/>: a plain copy when it
    /// is the stored dtype, otherwise a native conversion between floating-point types (saturating for fp8).
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is smaller than the tensor in <paramref name="dtype"/>.</exception>
    public unsafe void Read(string name, DType dtype, Span<byte> destination)
    {
        int index = IndexOf(name);
        long needed = checked(tensors[index].ElementCount * dtype.ElementSize());
        if (destination.Length < needed)
        {
            throw new ArgumentException(
                $"Tensor '{name}' needs {needed} bytes as {dtype}; the destination has {destination.Length}.", nameof(destination));
        }

        fixed (byte* target = destination)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_checkpoint_read_tensor(
                handle, (nuint)index, (int)dtype, target, (nuint)destination.Length));
        }
    }

    /// <summary>Reads a tensor's bytes exactly as stored (its own dtype, little-endian).</summary>
    public byte[] ReadRaw(string name)
    {
        TensorInfo tensor = Get(name);
        byte[] bytes = GC.AllocateUninitializedArray<byte>(checked((int)tensor.ByteSize));
        Read(name, tensor.DType, bytes);
        return bytes;
    }

    /// <summary>
    /// The native description of the checkpoint as JSON (the schema <c>flux inspect --json</c> prints):
    /// kind, layout, inferred configuration, parameter count, dtypes, files, metadata and problems.
    /// </summary>
    public unsafe string DescribeJson()
    {
        ThrowIfDisposed();
        return NativeString.Read(handle, static (checkpoint, buffer, capacity, needed) =>
            NativeMethods.fx_checkpoint_describe_json(checkpoint, buffer, capacity, needed));
    }

    /// <summary>The description of <see cref="DescribeJson"/>, parsed.</summary>
    public CheckpointDescription Describe() => CheckpointDescription.Parse(DescribeJson());

    /// <summary>
    /// The native handle, for loaders of this assembly (<see cref="FluxTransformer.Load(Checkpoint, FluxWeightFormat, int, FluxActivationPrecision, FluxDevice?, IReadOnlyList{FluxLora}?)"/>)
    /// that pass it to the library. The P/Invoke holds its own reference for the call.
    /// </summary>
    internal CheckpointHandle Handle
    {
        get
        {
            ThrowIfDisposed();
            return handle;
        }
    }

    /// <summary>Closes the checkpoint. Later calls throw <see cref="ObjectDisposedException"/>.</summary>
    public void Dispose() => handle.Dispose();

    private static unsafe TensorInfo[] ReadTensorInfos(CheckpointHandle handle)
    {
        NativeStatus.ThrowIfFailed(NativeMethods.fx_checkpoint_tensor_count(handle, out nuint count));
        var infos = new TensorInfo[checked((int)count)];
        // A sharded checkpoint has thousands of tensors in a handful of files: one string per file.
        var fileNames = new Dictionary<nint, string>();
        for (int i = 0; i < infos.Length; i++)
        {
            FxTensorInfo info;
            NativeMethods.fx_tensor_info_init(&info);
            NativeStatus.ThrowIfFailed(NativeMethods.fx_checkpoint_tensor_info(handle, (nuint)i, &info));
            var shape = new long[Math.Clamp(info.NDim, 0, NativeMethods.MaxDims)];
            long elements = 1;
            for (int d = 0; d < shape.Length; d++)
            {
                shape[d] = info.Shape[d];
                elements = checked(elements * shape[d]);
            }

            if (!fileNames.TryGetValue((nint)info.File, out string? file))
            {
                file = NativeStatus.Utf8(info.File);
                fileNames.Add((nint)info.File, file);
            }

            infos[i] = new TensorInfo(
                NativeStatus.Utf8(info.Name),
                (DType)info.DType,
                Array.AsReadOnly(shape),
                checked((long)info.ByteSize),
                elements,
                file,
                checked((long)info.FileOffset))
            {
                BlockType = BlockTypeName(info.BlockType),
            };
        }

        return infos;
    }

    // ggml's type ids of the GGUF block types the native reader accepts (fx_tensor_info.block_type).
    private static string? BlockTypeName(int id) => id switch
    {
        0 => null,
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        _ => $"ggml type {id}",
    };

    private TensorInfo Get(string name) => tensors[IndexOf(name)];

    private int IndexOf(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        ThrowIfDisposed();
        NativeStatus.ThrowIfFailed(NativeMethods.fx_checkpoint_find(handle, name, out nuint index));
        return checked((int)index);
    }

    private bool TryIndexOf(string name, out int index)
    {
        FluxStatus status = NativeMethods.fx_checkpoint_find(handle, name, out nuint found);
        if (status == FluxStatus.NotFound)
        {
            index = -1;
            return false;
        }

        NativeStatus.ThrowIfFailed(status);
        index = checked((int)found);
        return true;
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(handle.IsClosed, this);
}
