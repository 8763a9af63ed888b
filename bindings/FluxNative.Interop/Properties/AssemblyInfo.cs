using System.Runtime.CompilerServices;

// Every native signature is blittable; the LibraryImport generator does what marshalling remains
// (UTF-8 strings, SafeHandles) in generated code the JIT can see, and the runtime never marshals.
[assembly: DisableRuntimeMarshalling]

// The raw declarations, SafeHandles and status helpers stay internal: the public API is FluxNative's,
// which must never expose a pointer or a handle.
[assembly: InternalsVisibleTo("FluxNative")]
[assembly: InternalsVisibleTo("FluxNative.Interop.Tests")]
[assembly: InternalsVisibleTo("FluxNative.Tests")]
[assembly: InternalsVisibleTo("FluxNative.Benchmarks")]
