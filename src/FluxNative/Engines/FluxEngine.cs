using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using FluxNative.Interop;

namespace FluxNative;

/// <summary>How <see cref="FluxEngine.Build"/> builds.</summary>
public sealed record FluxEngineBuildOptions
{
    /// <summary>The transformer's linear weights (default bf16).</summary>
    public FluxEnginePrecision Precision { get; init; } = FluxEnginePrecision.Bf16;

    /// <summary>T5's linear weights: as stored (default), bf16 or FP8.</summary>
    public FluxWeightFormat T5Weights { get; init; } = FluxWeightFormat.AsStored;

    /// <summary>The device the engine is for (only the CPU has an engine layout yet).</summary>
    public FluxDevice Device { get; init; } = FluxDevice.Cpu;

    /// <summary>Native threads; 0 for the process-wide pool.</summary>
    public int Threads { get; init; }

    /// <summary>Record each source file's SHA-256 in the engine (reads every source byte once more; default on).</summary>
    public bool HashSources { get; init; } = true;
}

/// <summary>
/// Engine files (docs/engines.md): every component of a FLUX model with its weights already packed the way a backend
/// runs them, plus the tokenizer files, in one safetensors container. Loading one is a memory map: no repacking, no
/// requantising. Everything that loads a model folder also loads an engine (<see cref="FluxPipelineSources.ModelDirectory"/>
/// may name the engine file).
/// </summary>
public static class FluxEngine
{
    /// <summary>The usual file extension.</summary>
    public const string Extension = ".fluxengine";

    // The tokenizer files an engine carries, by the folders diffusers keeps them in.
    private static readonly string[] ClipTokenizerFiles = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"];
    private static readonly string[] T5TokenizerFiles = ["tokenizer.json", "spiece.model", "special_tokens_map.json", "tokenizer_config.json"];

    /// <summary>The engine description of the file at <paramref name="path"/>, or null when it is not a file or not an engine.</summary>
    /// <exception cref="FluxNativeException">The file is an engine this library cannot read (another format version; the message says what to do), or is damaged.</exception>
    public static FluxEngineInfo? TryRead(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!File.Exists(path) || !LooksLikeEngine(path))
        {
            return null;
        }

        using Checkpoint checkpoint = Checkpoint.Open(path);
        return checkpoint.Describe().Engine;
    }

    /// <summary>
    /// Builds an engine from <paramref name="sources"/> (a diffusers folder, or the BFL files with their text encoder
    /// folders) at <paramref name="output"/>: each component is loaded, packed and written in turn, then freed.
    /// </summary>
    /// <returns>The engine's description.</returns>
    /// <exception cref="GenerationRequestException">No transformer is given.</exception>
    /// <exception cref="FluxNativeException">A source is missing or not what it is given as, or the device has no engine layout.</exception>
    public static unsafe FluxEngineInfo Build(FluxPipelineSources sources, string output, FluxEngineBuildOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(sources);
        ArgumentException.ThrowIfNullOrEmpty(output);
        options ??= new FluxEngineBuildOptions();
        string transformerPath = sources.ResolveTransformer();
        string? autoencoderPath = sources.Autoencoder ?? Existing(sources.ModelDirectory, "vae");
        PromptEncoderSources? text = sources.ResolvePromptEncoder();

        var files = new List<(string Name, byte[] Bytes)>();
        if (text is not null)
        {
            AddFiles(files, text.ClipTokenizer, "tokenizer", ClipTokenizerFiles);
            AddFiles(files, text.T5Tokenizer, "tokenizer_2", T5TokenizerFiles);
            // An engine with text encoders carries tokenizers that work: CLIP's two files, and T5's one of two.
            bool Has(string name) => files.Any(f => f.Name == name);
            if (!Has("tokenizer/vocab.json") || !Has("tokenizer/merges.txt") || !(Has("tokenizer_2/tokenizer.json") || Has("tokenizer_2/spiece.model")))
            {
                throw new GenerationRequestException("tokenizer",
                    $"The tokenizer folders ({text.ClipTokenizer}, {text.T5Tokenizer}) lack vocab.json and merges.txt (CLIP) or tokenizer.json / spiece.model (T5).");
            }
        }

        var parts = new List<(string Component, string Path)> { ("transformer", transformerPath) };
        if (autoencoderPath is not null)
        {
            parts.Add(("autoencoder", autoencoderPath));
        }

        if (text is not null)
        {
            parts.Add(("clip", text.Clip));
            parts.Add(("t5", text.T5));
        }

        var checkpoints = new List<Checkpoint>();
        try
        {
            foreach ((string _, string path) in parts)
            {
                checkpoints.Add(Checkpoint.Open(path));
            }

            JsonObject build = new()
            {
                ["tool"] = "flux build",
                ["created"] = DateTimeOffset.UtcNow.ToString("O"),
                ["sources"] = new JsonArray(parts.Select((p, i) => (JsonNode)SourceEntry(p.Component, checkpoints[i], options.HashSources)).ToArray()),
            };
            Checkpoint? Find(string component) => parts.FindIndex(p => p.Component == component) is var i and >= 0 ? checkpoints[i] : null;
            BuildNative(Find("transformer")!, Find("autoencoder"), Find("clip"), Find("t5"), options, build.ToJsonString(), files, output);
        }
        finally
        {
            foreach (Checkpoint c in checkpoints)
            {
                c.Dispose();
            }
        }

        return TryRead(output) ?? throw new InvalidDataException($"{output}: the engine just written does not read back as one.");
    }

    /// <summary>
    /// Replaces the "build" record of the engine at <paramref name="path"/> (e.g. with the quality check's results) in
    /// place, without touching its weights.
    /// </summary>
    /// <exception cref="FluxNativeException">Not an engine, or the record does not fit the space its header has.</exception>
    public static unsafe void SetBuildRecord(string path, JsonObject build)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(build);
        byte[] pathUtf8 = Utf8Z(path), jsonUtf8 = Utf8Z(build.ToJsonString());
        fixed (byte* p = pathUtf8)
        fixed (byte* j = jsonUtf8)
        {
            NativeStatus.ThrowIfFailed(NativeMethods.fx_engine_amend_build_json(p, j));
        }
    }

    /// <summary>
    /// The tokenizer folders an engine carries, written once into a folder of the user's cache
    /// (<c>$XDG_CACHE_HOME/fluxnative/engine-tokenizers</c>, else <c>~/.cache/…</c>; or <paramref name="cacheRoot"/>)
    /// named for the files' contents, so that engines with the same tokenizers share it and the tokenizers read them as
    /// they read a model folder's. A folder whose files are not those is written again. Null when the engine carries none.
    /// </summary>
    /// <exception cref="InvalidDataException">A carried file is not what the engine lists (name, tensor or size).</exception>
    public static (string Clip, string T5)? TokenizerFolders(string enginePath, FluxEngineInfo info, string? cacheRoot = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(enginePath);
        ArgumentNullException.ThrowIfNull(info);
        if (!info.Files.Any(f => f.Name.StartsWith("tokenizer/", StringComparison.Ordinal)) ||
            !info.Files.Any(f => f.Name.StartsWith("tokenizer_2/", StringComparison.Ordinal)))
        {
            return null;
        }

        // The native reader has checked the names (plain relative paths, each in its own "files/NAME" tensor); the
        // bytes are read and checked against the listed sizes here, and name the folder.
        var contents = new List<(string Name, byte[] Bytes)>();
        using (Checkpoint checkpoint = Checkpoint.Open(enginePath))
        {
            foreach (FluxEngineFile f in info.Files)
            {
                TensorInfo? tensor = checkpoint.Find(f.Tensor);
                if (f.Tensor != "files/" + f.Name || tensor is null || tensor.DType != DType.U8 || tensor.ByteSize != f.Bytes || f.Bytes > 64 << 20)
                {
                    throw new InvalidDataException($"{enginePath}: the carried file '{f.Name}' is not the U8 tensor 'files/{f.Name}' of {f.Bytes} bytes it is listed as.");
                }

                contents.Add((f.Name, checkpoint.ReadRaw(f.Tensor)));
            }
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach ((string name, byte[] bytes) in contents)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(name + "\n" + bytes.Length + "\n"));
            hash.AppendData(bytes);
        }

        string root = cacheRoot ?? Path.Combine(Path.GetDirectoryName(SyntheticModels.DefaultCacheDirectory)!, "engine-tokenizers");
        string folder = Path.Combine(root, Convert.ToHexString(hash.GetHashAndReset())[..24].ToLowerInvariant());
        if (!Holds(folder, contents))
        {
            Directory.CreateDirectory(root);
            // A name of its own (threads and processes may extract at once), readable by this user only.
            string staging = Path.Combine(root, "staging-" + Guid.NewGuid().ToString("N"));
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(staging);
            }
            else
            {
                Directory.CreateDirectory(staging, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }

            try
            {
                foreach ((string name, byte[] bytes) in contents)
                {
                    string target = Path.GetFullPath(Path.Combine(staging, name));
                    if (!target.StartsWith(staging + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                    {
                        throw new InvalidDataException($"{enginePath}: the carried file name '{name}' leaves its folder.");
                    }

                    Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                    File.WriteAllBytes(target, bytes);
                }

                if (Directory.Exists(folder))
                {
                    Directory.Delete(folder, recursive: true);  // damaged (its files were not those): replaced
                }

                Directory.Move(staging, folder);
            }
            catch (IOException) when (Holds(folder, contents))
            {
                // Another thread or process wrote the same folder first.
            }
            finally
            {
                if (Directory.Exists(staging))
                {
                    Directory.Delete(staging, recursive: true);
                }
            }
        }

        return (Path.Combine(folder, "tokenizer"), Path.Combine(folder, "tokenizer_2"));
    }

    private static bool Holds(string folder, List<(string Name, byte[] Bytes)> contents) =>
        contents.All(c => File.Exists(Path.Combine(folder, c.Name)) && File.ReadAllBytes(Path.Combine(folder, c.Name)).AsSpan().SequenceEqual(c.Bytes));

    // An engine's header starts with its metadata, the engine key among the first bytes; reading up to 1 MiB of it is
    // enough to tell, and saves mapping and parsing a published checkpoint that is not one.
    private static bool LooksLikeEngine(string path)
    {
        using FileStream stream = File.OpenRead(path);
        var buffer = new byte[(int)Math.Min(stream.Length, 1 << 20)];
        int read = stream.ReadAtLeast(buffer, buffer.Length, throwOnEndOfStream: false);
        return buffer.AsSpan(0, read).IndexOf("\"fluxnative.engine\""u8) >= 0;
    }

    private static JsonObject SourceEntry(string component, Checkpoint checkpoint, bool hash)
    {
        CheckpointDescription d = checkpoint.Describe();
        var files = new JsonArray();
        foreach (string file in d.Files)
        {
            var entry = new JsonObject { ["path"] = Path.GetFullPath(file), ["bytes"] = new FileInfo(file).Length };
            if (hash)
            {
                using FileStream stream = File.OpenRead(file);
                entry["sha256"] = Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
            }

            files.Add(entry);
        }

        return new JsonObject { ["component"] = component, ["path"] = Path.GetFullPath(checkpoint.Path), ["files"] = files };
    }

    private static void AddFiles(List<(string Name, byte[] Bytes)> files, string folder, string prefix, string[] names)
    {
        foreach (string name in names)
        {
            string path = Path.Combine(folder, name);
            if (File.Exists(path))
            {
                files.Add(($"{prefix}/{name}", File.ReadAllBytes(path)));
            }
        }
    }

    private static string? Existing(string? modelDirectory, string folder) =>
        modelDirectory is not null && Directory.Exists(Path.Combine(modelDirectory, folder)) ? Path.Combine(modelDirectory, folder) : null;

    private static byte[] Utf8Z(string text)
    {
        byte[] bytes = new byte[Encoding.UTF8.GetByteCount(text) + 1];
        Encoding.UTF8.GetBytes(text, bytes);
        return bytes;
    }

    private static unsafe void BuildNative(
        Checkpoint transformer, Checkpoint? autoencoder, Checkpoint? clip, Checkpoint? t5, FluxEngineBuildOptions options, string buildJson,
        List<(string Name, byte[] Bytes)> files, string output)
    {
        if (!Enum.IsDefined(options.Precision))
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.Precision, "Not a FluxEnginePrecision.");
        }

        if (!Enum.IsDefined(options.T5Weights) || options.T5Weights == FluxWeightFormat.F32)
        {
            throw new ArgumentOutOfRangeException(nameof(options), options.T5Weights, "T5's weights in an engine: as stored, bf16 or FP8.");
        }

        ArgumentOutOfRangeException.ThrowIfNegative(options.Threads);
        var handles = new List<CheckpointHandle>();
        var pinned = new List<System.Runtime.InteropServices.GCHandle>();
        try
        {
            nint Raw(Checkpoint? c)
            {
                if (c is null)
                {
                    return 0;
                }

                // The raw handle goes into a struct: it is kept from being released until the build returns.
                bool added = false;
                c.Handle.DangerousAddRef(ref added);
                handles.Add(c.Handle);
                return c.Handle.DangerousGetHandle();
            }

            FxEngineBuildParams parameters;
            NativeMethods.fx_engine_build_params_init(&parameters);
            parameters.Transformer = Raw(transformer);
            parameters.Autoencoder = Raw(autoencoder);
            parameters.Clip = Raw(clip);
            parameters.T5 = Raw(t5);
            parameters.Precision = (int)(options.Precision == FluxEnginePrecision.Fp8 ? FluxWeightFormat.Fp8 : FluxWeightFormat.Bf16);
            parameters.T5Precision = (int)options.T5Weights;
            parameters.NumThreads = options.Threads;

            var native = new FxEngineFile[files.Count];
            var names = files.Select(f => Utf8Z(f.Name)).ToArray();
            for (int i = 0; i < files.Count; i++)
            {
                var data = System.Runtime.InteropServices.GCHandle.Alloc(files[i].Bytes, System.Runtime.InteropServices.GCHandleType.Pinned);
                pinned.Add(data);
                var name = System.Runtime.InteropServices.GCHandle.Alloc(names[i], System.Runtime.InteropServices.GCHandleType.Pinned);
                pinned.Add(name);
                native[i] = new FxEngineFile { Name = (byte*)name.AddrOfPinnedObject(), Data = (void*)data.AddrOfPinnedObject(), Size = (nuint)files[i].Bytes.Length };
            }

            byte[] device = options.Device.ToUtf8Z(), json = Utf8Z(buildJson), path = Utf8Z(output);
            fixed (byte* d = device)
            fixed (byte* j = json)
            fixed (byte* p = path)
            fixed (FxEngineFile* f = native)
            {
                parameters.Device = d;
                parameters.BuildJson = j;
                parameters.Files = native.Length > 0 ? f : null;
                parameters.FileCount = native.Length;
                NativeStatus.ThrowIfFailed(NativeMethods.fx_engine_build(&parameters, p));
            }
        }
        finally
        {
            foreach (var h in pinned)
            {
                h.Free();
            }

            foreach (CheckpointHandle h in handles)
            {
                h.DangerousRelease();
            }
        }
    }
}
