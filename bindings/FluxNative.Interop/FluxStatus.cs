namespace FluxNative;

/// <summary>
/// Why a native call failed. Mirrors <c>fx_status</c> in <c>fluxnative.h</c> value for value.
/// </summary>
public enum FluxStatus
{
    /// <summary>Success (<c>FX_OK</c>).</summary>
    Ok = 0,

    /// <summary>A missing value, an out-of-range value or a bad struct size (<c>FX_ERR_INVALID_ARGUMENT</c>).</summary>
    InvalidArgument = 1,

    /// <summary>A host or device allocation failed (<c>FX_ERR_OUT_OF_MEMORY</c>).</summary>
    OutOfMemory = 2,

    /// <summary>A file could not be opened, mapped, read or written (<c>FX_ERR_IO</c>).</summary>
    Io = 3,

    /// <summary>A file is corrupt, truncated or not what it claims to be (<c>FX_ERR_FORMAT</c>).</summary>
    Format = 4,

    /// <summary>A tensor, file or device that was asked for does not exist (<c>FX_ERR_NOT_FOUND</c>).</summary>
    NotFound = 5,

    /// <summary>Valid input that this build cannot handle (<c>FX_ERR_UNSUPPORTED</c>).</summary>
    Unsupported = 6,

    /// <summary>A caller's buffer is too small (<c>FX_ERR_BUFFER_TOO_SMALL</c>).</summary>
    BufferTooSmall = 7,

    /// <summary>The operation was cancelled by the caller (<c>FX_ERR_CANCELLED</c>).</summary>
    Cancelled = 8,

    /// <summary>The compute backend (CUDA driver, kernel launch) failed (<c>FX_ERR_BACKEND</c>).</summary>
    Backend = 9,

    /// <summary>A bug: an unexpected exception inside the library (<c>FX_ERR_INTERNAL</c>).</summary>
    Internal = 10,
}
