import { Component, inject, input, signal } from '@angular/core';
import { FormControl, FormGroup, ReactiveFormsModule, Validators } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { ActivatedRoute, Router } from '@angular/router';

import { ApiError, describeError } from './rest';

/** Where the user was going (`?next=`): a path inside the app, never another site. */
export function afterSignIn(next: string | null, home: string): string {
  return next && /^\/(?![/\\])/.test(next) ? next : home;
}

/** The sign-in page of a dashboard: email and password, then back to the page that asked. */
@Component({
  selector: 'pm-sign-in-form',
  imports: [ReactiveFormsModule, MatFormFieldModule, MatInputModule, MatButtonModule],
  template: `
    <main class="login">
      <form class="panel" [formGroup]="form" (ngSubmit)="submit()" aria-labelledby="login-title">
        <h1 id="login-title">{{ heading() }}</h1>
        @if (expired) { <p class="muted" role="status">Your session ended. Sign in again.</p> }
        <mat-form-field appearance="outline">
          <mat-label>Email</mat-label>
          <input matInput type="email" formControlName="email" autocomplete="username" data-testid="email" required>
          <mat-error>Enter your email.</mat-error>
        </mat-form-field>
        <mat-form-field appearance="outline">
          <mat-label>Password</mat-label>
          <input matInput type="password" formControlName="password" autocomplete="current-password" data-testid="password" required>
          <mat-error>Enter your password.</mat-error>
        </mat-form-field>
        @if (error()) { <p class="error-text" role="alert" data-testid="login-error">{{ error() }}</p> }
        <button mat-flat-button type="submit" [disabled]="busy()" data-testid="sign-in">Sign in</button>
        <ng-content />
      </form>
    </main>
  `,
  styles: `
    .login { min-height: 100vh; display: flex; align-items: center; justify-content: center; padding: 1rem; box-sizing: border-box; }
    form { width: 100%; max-width: 22rem; display: flex; flex-direction: column; gap: 0.25rem; padding: 2rem; }
    h1 { font-size: 1.35rem; font-weight: 500; margin: 0 0 1rem; }
  `,
})
export class SignInForm {
  private readonly router = inject(Router);
  private readonly query = inject(ActivatedRoute).snapshot.queryParamMap;
  readonly heading = input.required<string>();
  /** Where to go when no page asked for the sign-in. */
  readonly home = input.required<string>();
  /** Exchanges the credentials for a session; rejects with the API's error. */
  readonly signIn = input.required<(email: string, password: string) => Promise<void>>();
  readonly expired = this.query.has('expired');
  readonly busy = signal(false);
  readonly error = signal('');
  readonly form = new FormGroup({
    email: new FormControl('', { nonNullable: true, validators: [Validators.required] }),
    password: new FormControl('', { nonNullable: true, validators: [Validators.required] }),
  });

  async submit(): Promise<void> {
    if (this.form.invalid || this.busy()) {
      this.form.markAllAsTouched();
      return;
    }
    this.busy.set(true);
    this.error.set('');
    try {
      await this.signIn()(this.form.controls.email.value, this.form.controls.password.value);
      await this.router.navigateByUrl(afterSignIn(this.query.get('next'), this.home()));
    } catch (error) {
      this.error.set(
        error instanceof ApiError && error.status === 401 ? 'Wrong email or password.' : describeError(error),
      );
    } finally {
      this.busy.set(false);
    }
  }
}
