using System.Diagnostics;

namespace FluxNative.Testing;

/// <summary>
/// Makes files and folders read-only for real, undone on Dispose. For an ordinary user, permissions (a-w); as root,
/// whom permissions do not stop, the immutable attribute (<c>chattr +i</c>: needs CAP_LINUX_IMMUTABLE and a file
/// system that has it), which also stops writes through descriptors opened before, as a read-only remount would.
/// </summary>
internal sealed class ReadOnlyPaths : IDisposable
{
    private readonly List<(string Path, UnixFileMode Mode)> changed = [];
    private readonly bool immutable;

    private ReadOnlyPaths(bool immutable) => this.immutable = immutable;

    /// <summary>How the paths were made read-only (for the test's output).</summary>
    public string How => immutable ? "chattr +i" : "chmod a-w";

    /// <summary>
    /// Makes <paramref name="paths"/> read-only and checks that a write into the first one now fails; null when that
    /// cannot be done here (root without the capability, or a file system without the attribute).
    /// </summary>
    public static ReadOnlyPaths? TryMake(params string[] paths)
    {
        if (OperatingSystem.IsWindows())
        {
            return null;
        }

        var made = new ReadOnlyPaths(Environment.IsPrivilegedProcess);
        try
        {
            foreach (string path in paths)
            {
                made.Apply(path);
            }

            if (made.Writable(paths[0]))
            {
                made.Dispose();
                return null;
            }

            return made;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or System.ComponentModel.Win32Exception)
        {
            made.Dispose();
            return null;
        }
    }

    public void Dispose()
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }

        foreach ((string path, UnixFileMode mode) in Enumerable.Reverse(changed))
        {
            if (immutable)
            {
                Chattr("-i", path);
            }
            else
            {
                File.SetUnixFileMode(path, mode);
            }
        }

        changed.Clear();
    }

    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    private void Apply(string path)
    {
        UnixFileMode mode = File.GetUnixFileMode(path);
        if (immutable)
        {
            if (!Chattr("+i", path))
            {
                throw new InvalidOperationException("chattr +i failed");
            }
        }
        else
        {
            File.SetUnixFileMode(path, mode & ~(UnixFileMode.UserWrite | UnixFileMode.GroupWrite | UnixFileMode.OtherWrite));
        }

        changed.Add((path, mode));
    }

    private bool Writable(string path)
    {
        try
        {
            if (Directory.Exists(path))
            {
                string probe = Path.Combine(path, ".write-probe");
                File.WriteAllBytes(probe, [1]);
                File.Delete(probe);
            }
            else
            {
                using FileStream stream = File.Open(path, FileMode.Open, FileAccess.Write);
            }

            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    private static bool Chattr(string flag, string path)
    {
        var start = new ProcessStartInfo("chattr") { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        start.ArgumentList.Add(flag);
        start.ArgumentList.Add(path);
        using Process process = Process.Start(start)!;
        process.WaitForExit();
        return process.ExitCode == 0;
    }
}
