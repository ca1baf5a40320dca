/** Card-number rules the form checks before anything is sent: Luhn, brand, expiry, CVC. */

export type Brand = 'visa' | 'mastercard' | 'amex' | 'discover' | 'diners' | 'jcb' | 'unionpay' | 'unknown';

export const BRAND_NAMES: Record<Brand, string> = {
  visa: 'Visa',
  mastercard: 'Mastercard',
  amex: 'American Express',
  discover: 'Discover',
  diners: 'Diners Club',
  jcb: 'JCB',
  unionpay: 'UnionPay',
  unknown: '',
};

const BRAND_PATTERNS: [Brand, RegExp][] = [
  ['amex', /^3[47]/],
  ['diners', /^3(0[0-5]|[689])/],
  ['jcb', /^35(2[89]|[3-8])/],
  ['visa', /^4/],
  ['mastercard', /^(5[1-5]|2(2[2-9]|[3-6]|7[01]|720))/],
  ['discover', /^(6011|65|64[4-9])/],
  ['unionpay', /^62/],
];

/** Only the digits of what was typed. */
export function digitsOf(text: string): string {
  return text.replace(/\D/g, '');
}

/** The brand a number's first digits announce. */
export function detectBrand(number: string): Brand {
  const digits = digitsOf(number);
  return BRAND_PATTERNS.find(([, pattern]) => pattern.test(digits))?.[0] ?? 'unknown';
}

/** True when the digits pass the Luhn checksum. */
export function luhnValid(number: string): boolean {
  const digits = digitsOf(number);
  if (digits.length < 12 || digits.length > 19) {
    return false;
  }
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let digit = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 1) {
      digit *= 2;
      if (digit > 9) digit -= 9;
    }
    sum += digit;
  }
  return sum % 10 === 0;
}

/** Groups digits as printed on the card: 4-6-5 for American Express, fours otherwise. */
export function formatNumber(number: string): string {
  const digits = digitsOf(number).slice(0, 19);
  if (detectBrand(digits) === 'amex') {
    return [digits.slice(0, 4), digits.slice(4, 10), digits.slice(10, 15)].filter(Boolean).join(' ');
  }
  return digits.replace(/(\d{4})(?=\d)/g, '$1 ');
}

/** "MM / YY" as the customer types it. */
export function formatExpiry(text: string): string {
  const digits = digitsOf(text).slice(0, 4);
  return digits.length > 2 ? `${digits.slice(0, 2)} / ${digits.slice(2)}` : digits;
}

/** Month and four-digit year from "MM / YY", or null when malformed. */
export function parseExpiry(text: string): { month: number; year: number } | null {
  const digits = digitsOf(text);
  if (digits.length !== 4) {
    return null;
  }
  const month = Number(digits.slice(0, 2));
  const year = 2000 + Number(digits.slice(2));
  return month >= 1 && month <= 12 ? { month, year } : null;
}

/** True when the card is still valid this month (cards expire at the end of their month). */
export function expiryInFuture(month: number, year: number, now: Date = new Date()): boolean {
  return year > now.getFullYear() || (year === now.getFullYear() && month >= now.getMonth() + 1);
}

/** The CVC length the brand uses. */
export function cvcLength(brand: Brand): number {
  return brand === 'amex' ? 4 : 3;
}

/** Friendly text for the processor's decline codes; the server's message is the fallback. */
export const DECLINE_MESSAGES: Record<string, string> = {
  card_declined: 'Your card was declined. Try another card or contact your bank.',
  authentication_failed: 'Your bank could not confirm this payment. Try again or use another card.',
  insufficient_funds: 'Your card has insufficient funds. Try another card.',
  expired_card: 'Your card has expired. Try another card.',
  incorrect_cvc: "The card's security code is incorrect. Check it or try another card.",
  processing_error: 'An error occurred while processing your card. Try again in a moment.',
  fraudulent: 'Your card was declined. Try another card or contact your bank.',
  lost_card: 'Your card was declined. Try another card or contact your bank.',
  stolen_card: 'Your card was declined. Try another card or contact your bank.',
};
