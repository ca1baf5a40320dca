import { Component, inject, signal } from '@angular/core';
import { FormControl, FormGroup, ReactiveFormsModule, Validators, type AbstractControl, type ValidationErrors } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { ActivatedRoute, Router, RouterLink } from '@angular/router';

import { ApiError, describeError } from '@shared/rest';
import { Session } from '../session';

/** The server's minimum (AcceptInviteRequest.password). */
export const PASSWORD_MIN_LENGTH = 8;

function sameAsPassword(control: AbstractControl): ValidationErrors | null {
  const password = control.parent?.get('password')?.value as string | undefined;
  return control.value === password ? null : { mismatch: true };
}

/** `/accept?token=…`: an invited person sets a password, and is signed in. */
@Component({
  selector: 'pm-accept-page',
  imports: [ReactiveFormsModule, RouterLink, MatFormFieldModule, MatInputModule, MatButtonModule],
  template: `
    <main class="login">
      @if (token) {
        <form class="panel" [formGroup]="form" (ngSubmit)="submit()" aria-labelledby="accept-title">
          <h1 id="accept-title">Join your team on paymesh</h1>
          <p class="muted">Choose a password to accept the invitation.</p>
          <mat-form-field appearance="outline">
            <mat-label>New password</mat-label>
            <input matInput type="password" formControlName="password" autocomplete="new-password" data-testid="new-password" required>
            <mat-hint>At least {{ minLength }} characters.</mat-hint>
            <mat-error>At least {{ minLength }} characters.</mat-error>
          </mat-form-field>
          <mat-form-field appearance="outline">
            <mat-label>Repeat the password</mat-label>
            <input matInput type="password" formControlName="repeat" autocomplete="new-password" data-testid="repeat-password" required>
            <mat-error>The two passwords differ.</mat-error>
          </mat-form-field>
          @if (error()) { <p class="error-text" role="alert" data-testid="accept-error">{{ error() }}</p> }
          <button mat-flat-button type="submit" [disabled]="busy()" data-testid="accept">Accept and sign in</button>
        </form>
      } @else {
        <section class="panel" aria-labelledby="accept-title">
          <h1 id="accept-title">This invitation link is incomplete</h1>
          <p>Open the whole link from your invitation, or ask your team's admin for a new one.</p>
          <a routerLink="/login">Sign in</a>
        </section>
      }
    </main>
  `,
  styles: `
    .login { min-height: 100vh; display: flex; align-items: center; justify-content: center; padding: 1rem; box-sizing: border-box; }
    form, section { width: 100%; max-width: 24rem; display: flex; flex-direction: column; gap: 0.25rem; padding: 2rem; }
    h1 { font-size: 1.35rem; font-weight: 500; margin: 0 0 0.5rem; }
  `,
})
export class AcceptPage {
  private readonly session = inject(Session);
  private readonly router = inject(Router);
  readonly token = inject(ActivatedRoute).snapshot.queryParamMap.get('token') ?? '';
  readonly minLength = PASSWORD_MIN_LENGTH;
  readonly busy = signal(false);
  readonly error = signal('');
  readonly form = new FormGroup({
    password: new FormControl('', {
      nonNullable: true,
      validators: [Validators.required, Validators.minLength(PASSWORD_MIN_LENGTH)],
    }),
    repeat: new FormControl('', { nonNullable: true, validators: [Validators.required, sameAsPassword] }),
  });

  constructor() {
    // The repeat is checked again whenever the password changes.
    this.form.controls.password.valueChanges.subscribe(() => this.form.controls.repeat.updateValueAndValidity());
  }

  async submit(): Promise<void> {
    if (this.form.invalid || this.busy()) {
      this.form.markAllAsTouched();
      return;
    }
    this.busy.set(true);
    this.error.set('');
    try {
      await this.session.acceptInvite(this.token, this.form.controls.password.value);
      // The token has done its work: it leaves the address bar and the history.
      await this.router.navigateByUrl('/home', { replaceUrl: true });
    } catch (error) {
      this.error.set(
        error instanceof ApiError && (error.status === 404 || (error.status === 400 && error.param === 'token'))
          ? 'This invitation is no longer valid: it was used, withdrawn or has expired. Ask for a new one.'
          : describeError(error),
      );
    } finally {
      this.busy.set(false);
    }
  }
}
