using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>
/// Collects managed tensors and writes them as one safetensors file through the native writer
/// (tensors in the order added, 8-byte aligned data, written to a temporary name and renamed, so a
/// failure never leaves a half-written file behind).
/// </summary>
/// <example><code>
/// new SafetensorsWriter()
///     .Add("weight", new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3)
///     .Add("scale", DType.BF16, bf16Bytes, 3)
///     .Write("model.safetensors");
/// </code></example>
public sealed class SafetensorsWriter
{
    private readonly List<Entry> entries = [];
    private readonly HashSet<string> names = new(StringComparer.Ordinal);

    /// <summary>String values stored as the file's <c>__metadata__</c>.</summary>
    public IDictionary<string, string> Metadata { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>The number of tensors added.</summary>
    public int Count => entries.Count;

    /// <summary>Adds a tensor whose dtype follows from <typeparamref name="T"/> (float is F32, Half is F16, int is I32, ...).</summary>
    public SafetensorsWriter Add<T>(string name, T[] data, params ReadOnlySpan<long> shape)
        where T : unmanaged =>
        Add(name, new ReadOnlyMemory<T>(data), shape);

    /// <summary>Adds a tensor whose dtype follows from <typeparamref name="T"/>. The memory is read at <see cref="Write"/>.</summary>
    public SafetensorsWriter Add<T>(string name, ReadOnlyMemory<T> data, params ReadOnlySpan<long> shape)
        where T : unmanaged
    {
        DType dtype = DTypeOf<T>();
        return AddEntry(name, dtype, shape, checked((long)data.Length * dtype.ElementSize()), () => data.Pin());
    }

    /// <summary>Adds a tensor given as raw little-endian bytes of <paramref name="dtype"/> (for BF16 and fp8, which have no .NET type).</summary>
    public SafetensorsWriter Add(string name, DType dtype, ReadOnlyMemory<byte> data, params ReadOnlySpan<long> shape) =>
        AddEntry(name, dtype, shape, data.Length, () => data.Pin());

    /// <summary>Writes every tensor added so far to <paramref name="path"/>.</summary>
    /// <exception cref="FluxNativeException">The file could not be written (<see cref="FluxStatus.Io"/>).</exception>
    public unsafe void Write(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var pins = new MemoryHandle[entries.Count];
        var utf8Names = new IntPtr[entries.Count];
        try
        {
            var views = new FxTensorView[entries.Count];
            for (int i = 0; i < entries.Count; i++)
            {
                Entry entry = entries[i];
                pins[i] = entry.Pin();
                utf8Names[i] = Marshal.StringToCoTaskMemUTF8(entry.Name);
                views[i] = new FxTensorView
                {
                    Name = (byte*)utf8Names[i],
                    DType = (int)entry.DType,
                    NDim = entry.Shape.Length,
                    Data = pins[i].Pointer,
                    ByteSize = (ulong)entry.ByteSize,
                };
                entry.Shape.CopyTo(views[i].Shape);
            }

            fixed (FxTensorView* tensors = views)
            {
                NativeStatus.ThrowIfFailed(NativeMethods.fx_safetensors_write(path, tensors, (nuint)views.Length, MetadataJson()));
            }
        }
        finally
        {
            foreach (MemoryHandle pin in pins)
            {
                pin.Dispose();
            }

            foreach (IntPtr name in utf8Names)
            {
                Marshal.FreeCoTaskMem(name);
            }
        }
    }

    private SafetensorsWriter AddEntry(string name, DType dtype, ReadOnlySpan<long> shape, long byteSize, Func<MemoryHandle> pin)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (shape.Length > NativeMethods.MaxDims)
        {
            throw new ArgumentException($"Tensor '{name}' has {shape.Length} dimensions; at most {NativeMethods.MaxDims} are supported.", nameof(shape));
        }

        long elements = 1;
        foreach (long dimension in shape)
        {
            if (dimension < 0)
            {
                throw new ArgumentException($"Tensor '{name}' has a negative dimension in [{string.Join(", ", shape.ToArray())}].", nameof(shape));
            }

            elements = checked(elements * dimension);
        }

        // Checked here, where the caller can see which call was wrong, rather than by the native writer.
        long expected = checked(elements * dtype.ElementSize());
        if (byteSize != expected)
        {
            throw new ArgumentException(
                $"Tensor '{name}' of shape [{string.Join(", ", shape.ToArray())}] and dtype {dtype} needs {expected} bytes of data; {byteSize} were given.",
                nameof(shape));
        }

        if (!names.Add(name))
        {
            throw new ArgumentException($"A tensor named '{name}' was already added.", nameof(name));
        }

        entries.Add(new Entry(name, dtype, shape.ToArray(), byteSize, pin));
        return this;
    }

    private string? MetadataJson()
    {
        if (Metadata.Count == 0)
        {
            return null;
        }

        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            foreach ((string key, string value) in Metadata)
            {
                writer.WriteString(key, value);
            }

            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static DType DTypeOf<T>()
        where T : unmanaged
    {
        if (typeof(T) == typeof(float)) return DType.F32;
        if (typeof(T) == typeof(Half)) return DType.F16;
        if (typeof(T) == typeof(double)) return DType.F64;
        if (typeof(T) == typeof(long)) return DType.I64;
        if (typeof(T) == typeof(int)) return DType.I32;
        if (typeof(T) == typeof(short)) return DType.I16;
        if (typeof(T) == typeof(sbyte)) return DType.I8;
        if (typeof(T) == typeof(byte)) return DType.U8;
        if (typeof(T) == typeof(bool)) return DType.Bool;
        if (typeof(T) == typeof(ushort)) return DType.U16;
        if (typeof(T) == typeof(uint)) return DType.U32;
        if (typeof(T) == typeof(ulong)) return DType.U64;
        throw new ArgumentException($"{typeof(T).Name} has no safetensors dtype; pass its bytes with an explicit DType.");
    }

    private sealed record Entry(string Name, DType DType, long[] Shape, long ByteSize, Func<MemoryHandle> Pin);
}
