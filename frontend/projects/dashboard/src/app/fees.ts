/** The highest fee in basis points: 100 % of the captured amount. */
const FEE_BPS_MAX = 10_000;

/** A fee schedule as UpdateMerchantFees takes it. */
export interface FeeSchedule {
  feeBps: number;
  feeFixed: bigint;
}

/**
 * The fee schedule typed into the form, or why it cannot be saved. An empty number field is
 * ngModel's `null`, which used to be saved as 0: it is refused, as is anything but a whole
 * number in range.
 */
export function checkFeeSchedule(feeBps: number | null, feeFixed: number | null): FeeSchedule | string {
  if (feeBps === null || !Number.isInteger(feeBps) || feeBps < 0 || feeBps > FEE_BPS_MAX) {
    return `Enter the fee in basis points: a whole number from 0 to ${FEE_BPS_MAX}. Nothing was saved.`;
  }
  if (feeFixed === null || !Number.isSafeInteger(feeFixed) || feeFixed < 0) {
    return 'Enter the fixed fee in minor units: a whole number, 0 or more. Nothing was saved.';
  }
  return { feeBps, feeFixed: BigInt(feeFixed) };
}
