using System.Globalization;
using System.Text.RegularExpressions;

namespace FluxNative.Cli;

/// <summary>
/// Where <c>flux generate</c> writes its images, decided and checked before the model loads, so that a bad
/// <c>--output</c> costs nothing: a file name whose extension is the format (<c>.png</c>, <c>.jpg</c>/<c>.jpeg</c>,
/// <c>.webp</c>; a name without one gets the format's), or a folder (an existing one, or a name ending in <c>/</c>)
/// that receives numbered files <c>flux-00001.png</c>, <c>flux-00002.png</c>, … after those already there.
/// </summary>
internal sealed partial class OutputTarget
{
    private const string Option = "--output";

    private OutputTarget(ImageFormat format, string? file, string? directory)
    {
        Format = format;
        File = file;
        Directory = directory;
    }

    /// <summary>The format to encode.</summary>
    public ImageFormat Format { get; }

    /// <summary>The file to write (several images: NAME-1.EXT … NAME-N.EXT beside it), or null for a folder or the default name.</summary>
    public string? File { get; }

    /// <summary>The folder receiving numbered files, or null.</summary>
    public string? Directory { get; }

    /// <summary>Decides the format and the names from <c>--output</c> and <c>--format</c> and checks the place can be written.</summary>
    /// <exception cref="CliInputException">An extension that is not an image format flux writes, one that contradicts
    /// <c>--format</c>, or a place that cannot be written.</exception>
    public static OutputTarget Resolve(string? output, string? format)
    {
        ImageFormat? chosen = null;
        if (format is not null)
        {
            chosen = Images.TryParseFormat(format, out ImageFormat parsed) ? parsed : throw new CliInputException($"--format must be png, jpg, jpeg or webp (got '{format}').");
        }

        if (output is null)
        {
            CheckWritable(Path.Combine(Environment.CurrentDirectory, "flux.png"), Option);
            return new OutputTarget(chosen ?? ImageFormat.Png, null, null);
        }

        if (output.Length == 0)
        {
            throw new CliInputException($"{Option} is empty; give a file name or a folder.");
        }

        if (System.IO.Directory.Exists(output) || output.EndsWith(Path.DirectorySeparatorChar) || output.EndsWith(Path.AltDirectorySeparatorChar))
        {
            CheckWritable(Path.Combine(output, "flux.png"), Option);
            return new OutputTarget(chosen ?? ImageFormat.Png, null, output);
        }

        string extension = Path.GetExtension(output);
        if (extension.Length <= 1)
        {
            ImageFormat plain = chosen ?? ImageFormat.Png;
            string named = output.TrimEnd('.') + "." + Images.Extension(plain);
            CheckWritable(named, Option);
            return new OutputTarget(plain, named, null);
        }

        if (!Images.TryParseFormat(extension[1..], out ImageFormat fromName))
        {
            throw new CliInputException(
                $"{Option} {output}: flux writes PNG, JPEG and WebP, not '{extension}'; give a .png, .jpg, .jpeg or .webp name (or a folder).");
        }

        if (chosen is { } given && given != fromName)
        {
            throw new CliInputException(
                $"{Option} {output} names a {Describe(fromName)} file but --format is {format}; give a .{Images.Extension(given)} name, or leave out --format.");
        }

        CheckWritable(output, Option);
        return new OutputTarget(fromName, output, null);
    }

    /// <summary>
    /// Checks that <paramref name="file"/> could be created: its folder exists or can be made under the nearest
    /// existing folder, which accepts a new file (tried with a probe file, removed at once).
    /// </summary>
    /// <exception cref="CliInputException">It could not; the message names <paramref name="option"/> and the folder.</exception>
    public static void CheckWritable(string file, string option)
    {
        string full = Path.GetFullPath(file);
        if (System.IO.Directory.Exists(full))
        {
            throw new CliInputException($"{option} {file} is a folder; give a file name.");
        }

        string? folder = Path.GetDirectoryName(full);
        while (folder is not null && !System.IO.Directory.Exists(folder))
        {
            if (System.IO.File.Exists(folder))
            {
                throw new CliInputException($"{option} {file}: {folder} is a file, not a folder.");
            }

            folder = Path.GetDirectoryName(folder);
        }

        if (folder is null)
        {
            throw new CliInputException($"{option} {file}: no folder of it exists.");
        }

        string probe = Path.Combine(folder, $".flux-write-test-{Guid.NewGuid():N}");
        try
        {
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose))
            {
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            string why = e is UnauthorizedAccessException ? "permission denied" : "it does not accept new files";
            throw new CliInputException($"{option} {file}: cannot write in {folder} ({why}).");
        }
    }

    /// <summary>
    /// Writes the images and returns their paths: the file as given for one image, NAME-1.EXT … NAME-N.EXT for several;
    /// numbered files in a folder; <c>flux-SEED.EXT</c> (<c>flux-SEED-k.EXT</c>) in the current folder by default.
    /// </summary>
    public IReadOnlyList<string> Write(GenerationResult result)
    {
        ArgumentNullException.ThrowIfNull(result);
        string extension = Images.Extension(result.Plan.Format);
        if (Directory is not null)
        {
            return WriteNumbered(result, extension);
        }

        string path = File ?? string.Create(CultureInfo.InvariantCulture, $"flux-{result.Plan.Seed}.{extension}");
        var files = new List<string>();
        for (int k = 0; k < result.Images.Count; k++)
        {
            string file = result.Images.Count == 1
                ? path
                : Path.Combine(Path.GetDirectoryName(path) ?? string.Empty,
                    string.Create(CultureInfo.InvariantCulture, $"{Path.GetFileNameWithoutExtension(path)}-{k + 1}{Path.GetExtension(path)}"));
            CreateFolderOf(file);
            System.IO.File.WriteAllBytes(file, result.Images[k].Bytes);
            files.Add(file);
        }

        return files;
    }

    private IReadOnlyList<string> WriteNumbered(GenerationResult result, string extension)
    {
        string folder = Directory!;
        System.IO.Directory.CreateDirectory(folder);
        int next = 1 + System.IO.Directory.EnumerateFiles(folder, "flux-*")
            .Select(f => NumberedName().Match(Path.GetFileName(f)))
            .Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture))
            .DefaultIfEmpty(0)
            .Max();
        var files = new List<string>();
        foreach (GeneratedImage image in result.Images)
        {
            while (true)
            {
                string file = Path.Combine(folder, string.Create(CultureInfo.InvariantCulture, $"flux-{next++:D5}.{extension}"));
                try
                {
                    // CreateNew: another flux writing into the same folder never loses an image to this one.
                    using var stream = new FileStream(file, FileMode.CreateNew, FileAccess.Write);
                    stream.Write(image.Bytes);
                    files.Add(file);
                    break;
                }
                catch (IOException) when (System.IO.File.Exists(file))
                {
                    // Taken meanwhile: the next number.
                }
            }
        }

        return files;
    }

    private static void CreateFolderOf(string file)
    {
        if (Path.GetDirectoryName(Path.GetFullPath(file)) is { } folder)
        {
            System.IO.Directory.CreateDirectory(folder);
        }
    }

    private static string Describe(ImageFormat format) => format switch
    {
        ImageFormat.Png => "PNG",
        ImageFormat.Jpeg => "JPEG",
        _ => "WebP",
    };

    [GeneratedRegex(@"^flux-([0-9]{5,9})\.[A-Za-z]+$")]
    private static partial Regex NumberedName();
}
