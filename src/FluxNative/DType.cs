namespace FluxNative;

/// <summary>Element types of checkpoint tensors. Values mirror <c>fx_dtype</c> in <c>fluxnative.h</c>.</summary>
public enum DType
{
    /// <summary>IEEE binary32.</summary>
    F32 = 0,

    /// <summary>IEEE binary16.</summary>
    F16 = 1,

    /// <summary>bfloat16: the top 16 bits of a binary32.</summary>
    BF16 = 2,

    /// <summary>fp8 e4m3fn: 1-4-3, bias 7, no infinity, max 448.</summary>
    F8E4M3 = 3,

    /// <summary>fp8 e5m2: 1-5-2, bias 15, with infinities and NaNs, max 57344.</summary>
    F8E5M2 = 4,

    /// <summary>IEEE binary64.</summary>
    F64 = 5,

    /// <summary>Signed 64-bit integer.</summary>
    I64 = 6,

    /// <summary>Signed 32-bit integer.</summary>
    I32 = 7,

    /// <summary>Signed 16-bit integer.</summary>
    I16 = 8,

    /// <summary>Signed 8-bit integer.</summary>
    I8 = 9,

    /// <summary>Unsigned 8-bit integer.</summary>
    U8 = 10,

    /// <summary>Boolean, one byte.</summary>
    Bool = 11,

    /// <summary>Unsigned 16-bit integer.</summary>
    U16 = 12,

    /// <summary>Unsigned 32-bit integer.</summary>
    U32 = 13,

    /// <summary>Unsigned 64-bit integer.</summary>
    U64 = 14,
}

/// <summary>Facts about <see cref="DType"/> values that need no native call.</summary>
public static class DTypeExtensions
{
    /// <summary>Bytes per element.</summary>
    public static int ElementSize(this DType dtype) => dtype switch
    {
        DType.F64 or DType.I64 or DType.U64 => 8,
        DType.F32 or DType.I32 or DType.U32 => 4,
        DType.F16 or DType.BF16 or DType.I16 or DType.U16 => 2,
        DType.F8E4M3 or DType.F8E5M2 or DType.I8 or DType.U8 or DType.Bool => 1,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a FluxNative dtype"),
    };

    /// <summary>Whether the native library converts this type to and from the other floating-point types.</summary>
    public static bool IsFloatingPoint(this DType dtype) =>
        dtype is DType.F32 or DType.F16 or DType.BF16 or DType.F8E4M3 or DType.F8E5M2 or DType.F64;

    /// <summary>The name safetensors headers use ("F32", "BF16", "F8_E4M3", ...).</summary>
    public static string SafetensorsName(this DType dtype) => dtype switch
    {
        DType.F8E4M3 => "F8_E4M3",
        DType.F8E5M2 => "F8_E5M2",
        DType.Bool => "BOOL",
        _ when Enum.IsDefined(dtype) => dtype.ToString(),
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "not a FluxNative dtype"),
    };

    /// <summary>
    /// Parses a dtype as people type it on a command line or safetensors writes it
    /// ("f32", "bf16", "F8_E4M3", "fp16", ...), ignoring case.
    /// </summary>
    public static bool TryParse(string? text, out DType dtype)
    {
        dtype = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        string key = text.Trim().Replace("_", string.Empty, StringComparison.Ordinal).ToUpperInvariant();
        DType? parsed = key switch
        {
            "F32" or "FP32" or "FLOAT32" or "FLOAT" => DType.F32,
            "F16" or "FP16" or "FLOAT16" or "HALF" => DType.F16,
            "BF16" or "BFLOAT16" => DType.BF16,
            "F8E4M3" or "F8E4M3FN" or "FP8E4M3" => DType.F8E4M3,
            "F8E5M2" or "FP8E5M2" => DType.F8E5M2,
            "F64" or "FP64" or "FLOAT64" or "DOUBLE" => DType.F64,
            "I64" => DType.I64,
            "I32" => DType.I32,
            "I16" => DType.I16,
            "I8" => DType.I8,
            "U8" => DType.U8,
            "BOOL" => DType.Bool,
            "U16" => DType.U16,
            "U32" => DType.U32,
            "U64" => DType.U64,
            _ => null,
        };
        dtype = parsed.GetValueOrDefault();
        return parsed.HasValue;
    }
}
