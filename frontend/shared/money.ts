/**
 * Money display. Amounts travel as integer counts of the currency's minor unit (bigint here);
 * they are shown with the currency's own number of decimals, as the CLDR data in the browser's
 * Intl says (JPY 0, INR 2, KWD 3...), and never go through a float on the way.
 */

const formatters = new Map<string, Intl.NumberFormat>();

function formatter(currency: string, locale?: string): Intl.NumberFormat {
  const key = `${locale ?? ''}:${currency}`;
  let found = formatters.get(key);
  if (!found) {
    found = new Intl.NumberFormat(locale, { style: 'currency', currency });
    formatters.set(key, found);
  }
  return found;
}

/** The number of decimals of a currency's minor unit (2 for EUR, 0 for JPY, 3 for KWD). */
export function minorDigits(currency: string): number {
  return formatter(currency).resolvedOptions().maximumFractionDigits ?? 2;
}

/** The exact decimal string of an amount in minor units, e.g. (12345n, 2) → "123.45". */
export function toDecimalString(minor: bigint, digits: number): string {
  const negative = minor < 0n;
  const digitsText = (negative ? -minor : minor).toString().padStart(digits + 1, '0');
  const whole = digitsText.slice(0, digitsText.length - digits);
  const fraction = digits > 0 ? `.${digitsText.slice(digitsText.length - digits)}` : '';
  return `${negative ? '-' : ''}${whole}${fraction}`;
}

/** Formats an amount in minor units for display, e.g. (12345n, "EUR") → "€123.45". */
export function formatMoney(minor: bigint | number | string, currency: string, locale?: string): string {
  if (!currency) {
    return String(minor);
  }
  const amount = BigInt(minor);
  const exact = toDecimalString(amount, minorDigits(currency));
  // Intl formats a decimal string exactly (ES2023); the cast is for older lib typings.
  return formatter(currency, locale).format(exact as unknown as number);
}

/** Major units as a number, for charts only (axes need numbers; display uses formatMoney). */
export function toMajorNumber(minor: bigint, currency: string): number {
  return Number(toDecimalString(minor, minorDigits(currency)));
}

/** Parses an amount typed in major units ("12.50") into minor units; null when malformed. */
export function parseMajor(text: string, currency: string): bigint | null {
  const digits = minorDigits(currency);
  const match = /^\s*(\d{1,15})(?:[.,](\d*))?\s*$/.exec(text);
  if (!match || (match[2] ?? '').length > digits) {
    return null;
  }
  const fraction = (match[2] ?? '').padEnd(digits, '0');
  return BigInt(match[1] + fraction);
}
