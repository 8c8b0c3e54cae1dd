// A URL as an error or a log may show it: `scheme://user:pass@host/…` carries a credential, so its userinfo
// becomes `***` (the rest is kept: it says where). Browser-safe.

const USERINFO = /^((?:[A-Za-z][A-Za-z0-9+.-]*:)?\/\/)[^/?#]*@/;

/** `url` with the userinfo of its authority replaced by `***`; unchanged when it has none. */
export function maskUserinfo(url: string): string {
  const m = USERINFO.exec(url);
  return m === null ? url : `${m[1]}***@${url.slice(m[0].length)}`;
}
