using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Http;

namespace FluxNative.Server;

/// <summary>
/// <c>Authorization: Bearer KEY</c> on every path but <c>/healthz</c> and <c>/readyz</c> (Replicate's older clients send
/// <c>Token KEY</c>, also accepted). Keys are compared as SHA-256 digests with
/// <see cref="CryptographicOperations.FixedTimeEquals"/>, against every configured key, so the time taken tells
/// nothing about a key. Output file URLs carry their own signature and need no key.
/// </summary>
internal sealed class ApiKeyAuthentication
{
    private readonly byte[][] keyDigests;
    private readonly bool open;
    private readonly OutputFiles files;

    public ApiKeyAuthentication(IReadOnlyCollection<string> keys, bool insecureNoAuth, OutputFiles files)
    {
        keyDigests = [.. keys.Select(k => SHA256.HashData(Encoding.UTF8.GetBytes(k)))];
        open = insecureNoAuth && keys.Count == 0;
        this.files = files;
    }

    public static bool IsPublic(PathString path) =>
        path.Equals("/healthz", StringComparison.OrdinalIgnoreCase) || path.Equals("/readyz", StringComparison.OrdinalIgnoreCase);

    public bool Matches(string candidate)
    {
        byte[] digest = SHA256.HashData(Encoding.UTF8.GetBytes(candidate));
        bool match = false;
        foreach (byte[] key in keyDigests)
        {
            match |= CryptographicOperations.FixedTimeEquals(digest, key);
        }

        return match;
    }

    public async Task InvokeAsync(HttpContext context, RequestDelegate next)
    {
        if (open || IsPublic(context.Request.Path) || IsSignedFile(context.Request))
        {
            await next(context).ConfigureAwait(false);
            return;
        }

        string header = context.Request.Headers.Authorization.ToString();
        int space = header.IndexOf(' ', StringComparison.Ordinal);
        string scheme = space > 0 ? header[..space] : string.Empty;
        string token = space > 0 ? header[(space + 1)..].Trim() : string.Empty;
        if (header.Length == 0)
        {
            await ApiErrors.WriteAsync(context, StatusCodes.Status401Unauthorized,
                "Authentication required: send an API key as 'Authorization: Bearer KEY'.").ConfigureAwait(false);
            return;
        }

        if (!(scheme.Equals("Bearer", StringComparison.OrdinalIgnoreCase) || scheme.Equals("Token", StringComparison.OrdinalIgnoreCase)) || token.Length == 0)
        {
            await ApiErrors.WriteAsync(context, StatusCodes.Status401Unauthorized,
                "The Authorization header must be 'Bearer KEY'.").ConfigureAwait(false);
            return;
        }

        if (!Matches(token))
        {
            await ApiErrors.WriteAsync(context, StatusCodes.Status401Unauthorized, "The API key is not valid.").ConfigureAwait(false);
            return;
        }

        await next(context).ConfigureAwait(false);
    }

    private bool IsSignedFile(HttpRequest request)
    {
        if (!HttpMethods.IsGet(request.Method) && !HttpMethods.IsHead(request.Method))
        {
            return false;
        }

        if (!request.Path.StartsWithSegments("/v1/files", out PathString rest))
        {
            return false;
        }

        string[] parts = (rest.Value ?? string.Empty).Trim('/').Split('/');
        return parts.Length == 2 && files.Verify(parts[0], parts[1], request.Query["sig"].ToString());
    }
}
