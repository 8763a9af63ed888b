namespace FluxNative.Server;

/// <summary>
/// Input images (image-to-image) as requests carry them: <c>data:</c> URIs with base64 PNG, JPEG or WebP. URLs are
/// not fetched: a server that fetched what a request names would reach whatever the request names (the webhook
/// rules would have to apply), so until that is built an http(s) image is refused with the reason.
/// </summary>
internal static class InputImages
{
    /// <summary>Decodes <paramref name="uri"/>; every way it can be wrong is a 4xx naming <paramref name="field"/>.</summary>
    public static RgbImage Read(string? uri, string field)
    {
        if (string.IsNullOrWhiteSpace(uri))
        {
            throw ApiException.BadRequest($"{field} is empty; give the image as a data: URI (data:image/png;base64,...).", field);
        }

        if (uri.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || uri.StartsWith("https://", StringComparison.OrdinalIgnoreCase))
        {
            throw InputContract.Unsupported(field, "this server does not fetch image URLs; send the image itself as a data: URI (data:image/png;base64,...)");
        }

        if (!uri.StartsWith("data:", StringComparison.OrdinalIgnoreCase))
        {
            throw ApiException.BadRequest($"{field} must be a data: URI (data:image/png;base64,...).", field);
        }

        int comma = uri.IndexOf(',', StringComparison.Ordinal);
        string header = comma < 0 ? string.Empty : uri[5..comma];
        if (comma < 0 || !header.EndsWith(";base64", StringComparison.OrdinalIgnoreCase))
        {
            throw ApiException.BadRequest($"{field} must be a base64 data: URI (data:image/png;base64,...).", field);
        }

        ReadOnlySpan<char> payload = uri.AsSpan(comma + 1);
        var bytes = new byte[(payload.Length * 3 / 4) + 3];
        if (!Convert.TryFromBase64Chars(payload, bytes, out int length))
        {
            throw ApiException.BadRequest($"{field}: the data after the comma is not valid base64.", field);
        }

        try
        {
            return Images.Decode(bytes.AsSpan(0, length), out _);
        }
        catch (FluxNativeException e)
        {
            throw ApiException.BadRequest($"{field} is not a PNG, JPEG or WebP image this server can read: {e.Message}", field);
        }
    }
}
